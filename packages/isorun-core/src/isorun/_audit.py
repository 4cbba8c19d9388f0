"""`client.audit`: the nodes' tamper-evident audit log (spec/api.md "Audit"), read and verified.

Every node chains its entries with HMAC-SHA256 under a key only it holds; `list` reads a
sandbox's entries (also after it was deleted) and `verify` asks every node to check its chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from isorun import _routes
from isorun._base import parse_model
from isorun._models import AuditEntry, AuditReport

if TYPE_CHECKING:
    from isorun._client import AsyncClient, Client

DEFAULT_PAGE_SIZE = 200


class Audit:
    """The audit log, through a `Client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, sandbox_id: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[AuditEntry]:
        """Iterate over a sandbox's audit entries, oldest first, fetching pages as needed.

        Args:
            sandbox_id: One of the tenant's sandboxes, running or deleted.
            page_size: Entries per request, 1..200.

        Raises:
            SandboxNotFound: No such sandbox (also another tenant's).
            ServiceUnavailable: Its node does not answer.
        """
        req = _routes.list_audit(sandbox_id, page_size=page_size)
        yield from self._client.paginate(req, AuditEntry)

    def verify(self) -> AuditReport:
        """Have every node verify its chain; `report.ok` is False if any entry was altered,
        removed, reordered or cut, and `report.first_bad` names it.

        Raises:
            ServiceUnavailable: A node does not answer, so its chain cannot be vouched for.
        """
        return parse_model(AuditReport, self._client.send(_routes.verify_audit()))


class AsyncAudit:
    """The audit log, through an `AsyncClient`; as `Audit`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(
        self, sandbox_id: str, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[AuditEntry]:
        """Iterate (`async for`) over a sandbox's audit entries; arguments as `Audit.list`."""
        req = _routes.list_audit(sandbox_id, page_size=page_size)
        async for entry in self._client.paginate(req, AuditEntry):
            yield entry

    async def verify(self) -> AuditReport:
        """As `Audit.verify`."""
        return parse_model(AuditReport, await self._client.send(_routes.verify_audit()))
