"""`client.snapshots`: the tenant's snapshots (spec/api.md "Snapshots"), listed, got, deleted.

Snapshots are made by `Sandbox.snapshot()` and started from with `Sandbox(snapshot=...)` /
`Sandbox.from_snapshot(...)`; this namespace holds what is done to them by id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from isorun import _routes
from isorun._base import parse_model
from isorun._models import Snapshot

if TYPE_CHECKING:
    from isorun._client import AsyncClient, Client

DEFAULT_PAGE_SIZE = 50


class Snapshots:
    """The snapshots of the client's tenant, through a `Client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(
        self, *, sandbox_id: str | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[Snapshot]:
        """Iterate over the tenant's snapshots, newest first, fetching pages as needed.

        Args:
            sandbox_id: Only the snapshots of this sandbox.
            page_size: Snapshots per request, 1..200.
        """
        req = _routes.list_snapshots(sandbox_id=sandbox_id, page_size=page_size)
        yield from self._client.paginate(req, Snapshot)

    def get(self, snapshot_id: str) -> Snapshot:
        """Raises: SnapshotNotFound (also another tenant's)."""
        return parse_model(Snapshot, self._client.send(_routes.get_snapshot(snapshot_id)))

    def delete(self, snapshot_id: str) -> None:
        """Delete the snapshot; sandboxes started from it are not affected.

        Raises:
            SnapshotNotFound: No such snapshot (also: deleted already).
        """
        self._client.send(_routes.delete_snapshot(snapshot_id))


class AsyncSnapshots:
    """The snapshots of the client's tenant, through an `AsyncClient`; as `Snapshots`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(
        self, *, sandbox_id: str | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[Snapshot]:
        """Iterate (`async for`) over the tenant's snapshots; arguments as `Snapshots.list`."""
        req = _routes.list_snapshots(sandbox_id=sandbox_id, page_size=page_size)
        async for snapshot in self._client.paginate(req, Snapshot):
            yield snapshot

    async def get(self, snapshot_id: str) -> Snapshot:
        """Raises: SnapshotNotFound (also another tenant's)."""
        return parse_model(Snapshot, await self._client.send(_routes.get_snapshot(snapshot_id)))

    async def delete(self, snapshot_id: str) -> None:
        """Raises: SnapshotNotFound."""
        await self._client.send(_routes.delete_snapshot(snapshot_id))
