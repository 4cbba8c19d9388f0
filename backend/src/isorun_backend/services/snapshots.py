"""Snapshots: a running sandbox's state saved on its node, to start new sandboxes from.

```
create    sandbox running (its lock held) ─► node saves it under an id chosen here (the VM
          pauses, then continues) ─► row naming the node; the row fails: the save is deleted
restore   POST /v1/sandboxes {"snapshot": id} (services.sandboxes): on the snapshot's node
delete    node deletes the state ─► row deleted (404 from then on)
GC        a sandbox's DELETE deletes its snapshots not marked ``keep`` (services.sandboxes)
```
Snapshots belong to the tenant of the key that made them: another tenant's is a 404.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from isorun_hostd.agent_channel import ChannelError
from isorun_hostd.vm.errors import SnapshotError, StateError
from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from isorun_backend.core.security import Principal
from isorun_backend.models import SnapshotCreate, SnapshotList, SnapshotPublic, SnapshotRow
from isorun_backend.services.errors import SnapshotFailed, SnapshotNotFound
from isorun_backend.services.sandboxes import SandboxService, decode_cursor, encode_cursor
from isorun_backend.storage import Database

log = logging.getLogger(__name__)


class SnapshotService:
    def __init__(self, db: Database, sandboxes: SandboxService) -> None:
        self._db = db
        self._sandboxes = sandboxes

    async def create(
        self, principal: Principal, sandbox_id: str, body: SnapshotCreate
    ) -> SnapshotPublic:
        """Save a running sandbox; it pauses for the save and continues.

        Raises:
            SandboxNotFound, SandboxNotRunning (hibernated, stopped, failed), Unavailable,
            SnapshotFailed (the save failed, e.g. disk full; the sandbox is unharmed).
        """
        async with self._sandboxes.saving(principal, sandbox_id, "snapshot") as (row, node):
            snapshot_id = f"snap-{secrets.token_hex(6)}"
            try:
                saved = await node.snapshot(sandbox_id, snapshot_id)
            except ChannelError as exc:
                raise self._sandboxes.lost(sandbox_id, exc) from exc
            except (SnapshotError, StateError) as exc:
                raise SnapshotFailed(
                    f"snapshot of {sandbox_id} failed: {exc}", sandbox_id=sandbox_id
                ) from exc
            snapshot = SnapshotRow(
                id=snapshot_id,
                tenant_id=principal.tenant_id,
                sandbox_id=sandbox_id,
                node=node.name,
                name=body.name,
                keep=body.keep,
                image=row.image,
                image_ref=row.image_ref,
                vcpus=row.vcpus,
                memory_mib=row.memory_mib,
                size_bytes=saved.size_bytes,
            )
            try:
                async with self._db.session() as session, session.begin():
                    session.add(snapshot)
            except BaseException:
                await asyncio.shield(node.delete_snapshot(snapshot_id))
                raise
        log.info("sandbox %s saved as snapshot %s", sandbox_id, snapshot_id)
        return _public(snapshot)

    async def get(self, principal: Principal, snapshot_id: str) -> SnapshotPublic:
        """Raises: SnapshotNotFound (also for another tenant's snapshot)."""
        async with self._db.session() as session:
            return _public(await _row(session, principal, snapshot_id))

    async def listing(
        self,
        principal: Principal,
        *,
        sandbox_id: str | None = None,
        limit: int,
        cursor: str | None = None,
    ) -> SnapshotList:
        """The tenant's snapshots (of one sandbox, if given), newest first.

        Raises:
            InvalidRequest: ``cursor`` is not one this service handed out.
        """
        query = select(SnapshotRow).where(SnapshotRow.tenant_id == principal.tenant_id)
        if sandbox_id is not None:
            query = query.where(SnapshotRow.sandbox_id == sandbox_id)
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    SnapshotRow.created_at < created_at,
                    and_(SnapshotRow.created_at == created_at, SnapshotRow.id < last_id),
                )
            )
        query = query.order_by(SnapshotRow.created_at.desc(), SnapshotRow.id.desc()).limit(
            limit + 1
        )
        async with self._db.session() as session:
            rows = list(await session.scalars(query))
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
        return SnapshotList(data=[_public(row) for row in page], next_cursor=next_cursor)

    async def delete(self, principal: Principal, snapshot_id: str) -> None:
        """Delete the snapshot's state on its node, then its row. Sandboxes restored from it
        are not affected.

        Raises:
            SnapshotNotFound, Unavailable (its node does not answer; nothing is deleted).
        """
        async with self._db.session() as session:
            snapshot = await _row(session, principal, snapshot_id)
        node = self._sandboxes.node(snapshot.node)
        if node is not None:
            # A node that does not answer raises NodeUnavailable (503): the row stays.
            await node.delete_snapshot(snapshot_id)
        async with self._db.session() as session, session.begin():
            await session.execute(delete(SnapshotRow).where(SnapshotRow.id == snapshot_id))
        log.info("snapshot %s deleted", snapshot_id)


async def _row(session: AsyncSession, principal: Principal, snapshot_id: str) -> SnapshotRow:
    row = await session.get(SnapshotRow, snapshot_id)
    if row is None or row.tenant_id != principal.tenant_id:
        raise SnapshotNotFound(snapshot_id)
    return row


def _public(row: SnapshotRow) -> SnapshotPublic:
    return SnapshotPublic(
        id=row.id,
        sandbox_id=row.sandbox_id,
        name=row.name,
        keep=row.keep,
        image=row.image,
        image_ref=row.image_ref,
        vcpus=row.vcpus,
        memory_mib=row.memory_mib,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
    )
