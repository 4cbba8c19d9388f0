"""Audit: a sandbox's entries from its node's chain, and a verification of every node's chain.

```
listing   the tenant's row (a deleted sandbox's too) ─► its node ─► entries, paged by seq
verify    every node verifies its own chain ─► per node: ok, checked, first bad (seq, reason)
```
The chains live on the nodes (hostd's audit/), with keys no backend holds: the backend can
serve and check them but not rewrite them. A tenant sees the seq and reason of a bad entry, not
the detail, which may describe another tenant's entries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from isorun_backend.core.security import Principal
from isorun_backend.models import (
    AuditEntry,
    AuditFinding,
    AuditList,
    AuditNodeReport,
    AuditReport,
    SandboxRow,
)
from isorun_backend.nodes import Node
from isorun_backend.services.errors import InvalidRequest, SandboxNotFound, Unavailable
from isorun_backend.storage import Database


class AuditService:
    def __init__(self, db: Database, nodes: Sequence[Node]) -> None:
        self._db = db
        self._nodes = {node.name: node for node in nodes}

    async def listing(
        self, principal: Principal, sandbox_id: str, *, limit: int, cursor: str | None
    ) -> AuditList:
        """The sandbox's entries in order, ``limit`` at a time; deleted sandboxes included.

        Raises:
            SandboxNotFound (also another tenant's), InvalidRequest (a cursor not from here),
            Unavailable (its node is not configured now or does not answer).
        """
        try:
            after = int(cursor) if cursor is not None else 0
        except ValueError:
            raise InvalidRequest("not a cursor from a previous page", field="cursor") from None
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id)
        if row is None or row.tenant_id != principal.tenant_id:
            raise SandboxNotFound(sandbox_id)
        node = self._nodes.get(row.node)
        if node is None:
            raise Unavailable(f"node {row.node} of sandbox {sandbox_id} is not configured")
        page = await node.audit_entries(sandbox_id, after=after, limit=limit)
        return AuditList(
            data=[AuditEntry.model_validate(entry.model_dump()) for entry in page.data],
            next_cursor=str(page.cursor) if page.cursor is not None else None,
        )

    async def verify(self) -> AuditReport:
        """Every node's chain, verified by the node.

        Raises:
            Unavailable: a node does not answer (its chain cannot be vouched for).
        """
        nodes = list(self._nodes.values())
        answers = await asyncio.gather(*(node.audit_verify() for node in nodes))
        reports = [
            AuditNodeReport(
                node=node.name,
                ok=answer.ok,
                checked=answer.checked,
                first_bad=None
                if answer.first_bad is None
                else AuditFinding(seq=answer.first_bad.seq, reason=answer.first_bad.reason),
            )
            for node, answer in zip(nodes, answers, strict=True)
        ]
        return AuditReport(ok=all(report.ok for report in reports), nodes=reports)
