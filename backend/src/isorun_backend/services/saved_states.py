"""Fork, hibernate and resume: what the sandbox service does with a running sandbox's state.

```
fork      source running (its lock held) ─► reserve quota for the clones (``count`` rows) ─►
          node fork (it names the clones; ``_forking`` holds off orphan destruction on that node
          meanwhile) ─► rows (labels, env, metadata copied; forked_from) ─► reservations settled
          rows fail: the clones are destroyed
hibernate node saves the state and destroys the VM ─► row "hibernated", a hibernation span
          opens (not metered, holds no quota); hibernated rows survive restarts
resume    reserve quota ─► node restores the state under the same id ─► row "running", the
          span closes and the expiry moves by its length; the row update fails: hibernated
          again. A failed restore leaves the sandbox hibernated.
auto      the reaper hibernates running sandboxes idle for ``auto_hibernate_s`` (no exec, file
          or process call, no API-started process running)
```

``SavedStates`` is a part of ``SandboxService`` (services.sandboxes), kept in its own module for
size: it works on the service's maps (``_live``, ``_busy``, ``_locks``) under the invariants
drawn there. The row helpers here are the service's too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

from isorun_hostd.agent_channel import AgentError, ChannelError
from isorun_hostd.api.models import NodeSandbox
from isorun_hostd.net.apply import NetworkError
from isorun_hostd.net.spec import NetworkSpec
from isorun_hostd.sandboxes import NoRoom, RuntimeRefused
from isorun_hostd.snapshots import SnapshotNotFound as NodeSnapshotNotFound
from isorun_hostd.vm import VMError
from isorun_hostd.vm.errors import SnapshotError, StateError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from isorun_backend.core.security import Principal
from isorun_backend.models import (
    ForkCreate,
    ForkList,
    HibernationSpan,
    SandboxPublic,
    SandboxRow,
    utcnow,
)
from isorun_backend.nodes import Node
from isorun_backend.services.errors import (
    Conflict,
    InternalError,
    SandboxNotFound,
    SandboxNotRunning,
    ServiceError,
    SnapshotFailed,
    Unavailable,
)
from isorun_backend.services.quotas import QuotaService
from isorun_backend.services.usage import Meter
from isorun_backend.storage import Database

log = logging.getLogger(__name__)


class SavedStates:
    """Fork, hibernate, resume and auto-hibernation; mixed into ``SandboxService``, whose
    ``__init__`` sets the attributes declared here."""

    _db: Database
    _nodes: dict[str, Node]
    _quotas: QuotaService
    _meter: Meter
    # See SandboxService: VMs known running, ids mid-create/delete/save, unanswering nodes.
    _live: dict[str, Node]
    _busy: set[str]
    _unreached: set[str]
    # Per sandbox: fork, snapshot, hibernate, resume and delete one at a time.
    _locks: defaultdict[str, asyncio.Lock]
    # Per node: forks in flight, whose clones (named by the node) are not yet ``_live``.
    _forking: defaultdict[str, int]
    # Last exec, file or process call per sandbox (monotonic), for auto-hibernation.
    _active: dict[str, float]
    # Clients attached to a shell, per sandbox (SandboxService.attached).
    _attached: Counter[str]

    async def _current(self, principal: Principal, sandbox_id: str) -> SandboxPublic:
        async with self._db.session() as session:
            return sandbox_public(await sandbox_row(session, principal, sandbox_id), self._meter)

    def lost(self, sandbox_id: str, exc: Exception) -> ServiceError:
        """The error for an agent channel that broke while in use: the sandbox was stopped
        meanwhile (by a delete or its TTL), or its VM failed under us."""
        if sandbox_id not in self._live:
            return SandboxNotRunning(sandbox_id, "stopped")
        return InternalError(f"lost the connection to the sandbox: {exc}", sandbox_id=sandbox_id)

    @contextlib.asynccontextmanager
    async def saving(
        self, principal: Principal, sandbox_id: str, what: str
    ) -> AsyncIterator[tuple[SandboxRow, Node]]:
        """Hold the sandbox's lock for a save (fork, snapshot, hibernate); yields its row and
        node. ``what`` names the operation in the refusal.

        Raises:
            SandboxNotFound, SandboxNotRunning (hibernated, stopped or failed), Unavailable.
        """
        async with self._locks[sandbox_id]:
            async with self._db.session() as session:
                row = await sandbox_row(session, principal, sandbox_id)
            node = self._live.get(sandbox_id)
            if row.state == "running" and node is None and row.node in self._unreached:
                raise Unavailable(f"node {row.node} of sandbox {sandbox_id} does not answer")
            if row.state != "running" or node is None:
                state = "stopped" if row.state == "running" else row.state
                raise SandboxNotRunning(sandbox_id, state, what=what)
            self._active[sandbox_id] = time.monotonic()
            yield row, node

    async def fork(self, principal: Principal, sandbox_id: str, body: ForkCreate) -> ForkList:
        """``body.count`` clones of a running sandbox (its files and processes as they are),
        each a new sandbox of the same tenant with the source's labels, env, metadata and
        network (policy and secrets).
        All or none; they count against the quota as creates do.

        Raises:
            SandboxNotFound, SandboxNotRunning, QuotaExceeded, Unavailable (no room on the
            source's node), SnapshotFailed, InternalError.
        """
        async with (
            self.saving(principal, sandbox_id, "fork") as (source, node),
            self._quotas.reserve(
                principal.tenant_id, source.vcpus, source.memory_mib, count=body.count
            ) as reservation,
        ):
            clones = await self._fork_vms(node, sandbox_id, body.count)
            now = utcnow()
            expires_at = (
                source.expires_at
                if body.timeout_s is None
                else now + dt.timedelta(seconds=body.timeout_s)
            )
            rows = [
                SandboxRow(
                    id=clone.id,
                    node=node.name,
                    tenant_id=principal.tenant_id,
                    image=source.image,
                    image_ref=source.image_ref,
                    state="running",
                    vcpus=source.vcpus,
                    memory_mib=source.memory_mib,
                    env=dict(source.env),
                    meta=dict(source.meta),
                    labels=dict(source.labels),
                    created_at=now,
                    expires_at=expires_at,
                    forked_from=sandbox_id,
                    auto_hibernate_s=source.auto_hibernate_s,
                    network=source.network,
                )
                for clone in clones
            ]
            try:
                async with self._db.session() as session, session.begin():
                    session.add_all(rows)
                    await self._quotas.settle(session, reservation)
            except BaseException:
                for clone in clones:
                    self._live.pop(clone.id, None)
                await asyncio.shield(
                    asyncio.gather(
                        *(node.destroy(clone.id) for clone in clones), return_exceptions=True
                    )
                )
                raise
            finally:
                self._busy.difference_update(clone.id for clone in clones)
        log.info("sandbox %s forked into %s", sandbox_id, [clone.id for clone in clones])
        return ForkList(data=[sandbox_public(row, self._meter) for row in rows])

    async def _fork_vms(self, node: Node, sandbox_id: str, count: int) -> list[NodeSandbox]:
        """The clones, ``_live`` and ``_busy`` (until the caller has written their rows)."""
        self._forking[node.name] += 1
        try:
            clones = await node.fork(sandbox_id, count)
            for clone in clones:
                self._live[clone.id] = node
                self._busy.add(clone.id)
        except NoRoom as exc:
            raise Unavailable(f"node {node.name}: {exc}") from exc
        except ChannelError as exc:
            raise self.lost(sandbox_id, exc) from exc
        except (SnapshotError, StateError) as exc:
            raise SnapshotFailed(
                f"fork of {sandbox_id} failed: {exc}", sandbox_id=sandbox_id
            ) from exc
        except (AgentError, VMError, ValueError) as exc:
            raise InternalError(
                f"fork of {sandbox_id} failed: {exc}", sandbox_id=sandbox_id
            ) from exc
        finally:
            self._forking[node.name] -= 1
        return clones

    async def hibernate(self, principal: Principal, sandbox_id: str) -> SandboxPublic:
        """Save the sandbox to its node's disk and destroy its VM: it holds no quota and is not
        metered until ``resume``. Hibernating a hibernated sandbox returns it as it is.

        Raises:
            SandboxNotFound, SandboxNotRunning (stopped or failed), Unavailable,
            SnapshotFailed (the save failed; the sandbox keeps running).
        """
        async with self._db.session() as session:
            if (await sandbox_row(session, principal, sandbox_id)).state == "hibernated":
                return await self._current(principal, sandbox_id)
        async with self.saving(principal, sandbox_id, "hibernate") as (_row_now, node):
            await self._hibernate_vm(sandbox_id, node)
        log.info("sandbox %s hibernated", sandbox_id)
        return await self._current(principal, sandbox_id)

    async def _hibernate_vm(self, sandbox_id: str, node: Node) -> None:
        self._busy.add(sandbox_id)
        try:
            try:
                await node.hibernate(sandbox_id)
            except ChannelError as exc:
                raise self.lost(sandbox_id, exc) from exc
            except (SnapshotError, StateError) as exc:
                raise SnapshotFailed(
                    f"hibernate of {sandbox_id} failed; it keeps running: {exc}",
                    sandbox_id=sandbox_id,
                ) from exc
            self._live.pop(sandbox_id, None)
            now = utcnow()
            async with self._db.session() as session, session.begin():
                await session.execute(
                    update(SandboxRow)
                    .where(SandboxRow.id == sandbox_id, SandboxRow.state == "running")
                    .values(state="hibernated", hibernated_at=now)
                )
                session.add(HibernationSpan(sandbox_id=sandbox_id, started_at=now))
        finally:
            self._busy.discard(sandbox_id)

    async def resume(self, principal: Principal, sandbox_id: str) -> SandboxPublic:
        """Bring a hibernated sandbox back, its processes and files as they were; its expiry
        moves by the time it spent hibernated. Resuming a running sandbox returns it as is.

        Raises:
            SandboxNotFound, Conflict (stopped or failed), QuotaExceeded, Unavailable (its node
            does not answer or has no room), SnapshotFailed (its saved state is missing or
            corrupt, or the node changed; it stays hibernated).
        """
        async with self._locks[sandbox_id]:
            async with self._db.session() as session:
                row = await sandbox_row(session, principal, sandbox_id)
            if row.state == "running":
                return sandbox_public(row, self._meter)
            if row.state != "hibernated":
                raise Conflict(
                    f"sandbox {sandbox_id!r} is {row.state}; only a hibernated sandbox resumes"
                )
            node = self._nodes.get(row.node)
            if node is None:
                raise Unavailable(f"sandbox {sandbox_id} hibernated on node {row.node}, gone")
            async with self._quotas.reserve(
                principal.tenant_id, row.vcpus, row.memory_mib
            ) as reservation:
                await self._resume_vm(sandbox_id, node, reservation, row.network)
            self._active[sandbox_id] = time.monotonic()
        log.info("sandbox %s resumed", sandbox_id)
        return await self._current(principal, sandbox_id)

    async def _resume_vm(
        self, sandbox_id: str, node: Node, reservation: str, network: dict[str, Any] | None
    ) -> None:
        self._busy.add(sandbox_id)
        try:
            try:
                # Always sent: a node restarted since the hibernation no longer knows it.
                spec = NetworkSpec.model_validate(network) if network is not None else None
                await node.resume(sandbox_id, network=spec)
            except NoRoom as exc:
                raise Unavailable(f"node {node.name}: {exc}") from exc
            except (NodeSnapshotNotFound, SnapshotError) as exc:
                raise SnapshotFailed(
                    f"resume of {sandbox_id} failed; it stays hibernated: {exc}",
                    sandbox_id=sandbox_id,
                ) from exc
            except (RuntimeRefused, VMError, NetworkError, ValueError) as exc:
                raise InternalError(
                    f"resume of {sandbox_id} failed; it stays hibernated: {exc}",
                    sandbox_id=sandbox_id,
                ) from exc
            self._live[sandbox_id] = node
            try:
                now = utcnow()
                async with self._db.session() as session, session.begin():
                    row = await session.get(SandboxRow, sandbox_id)
                    assert row is not None and row.hibernated_at is not None
                    row.expires_at += now - row.hibernated_at
                    end_hibernation(row, now)
                    row.state = "running"
                    await close_span(session, sandbox_id, now)
                    await self._quotas.settle(session, reservation)
            except BaseException:
                # The node deleted the hibernation on resume: save it again rather than lose it.
                self._live.pop(sandbox_id, None)
                await asyncio.shield(node.hibernate(sandbox_id))
                raise
        finally:
            self._busy.discard(sandbox_id)

    async def _auto_hibernate(self) -> None:
        """Hibernate running sandboxes idle past their ``auto_hibernate_s``: no exec, file or
        process call since, no client attached to a shell, and no process started through the
        API still running."""
        async with self._db.session() as session:
            rows = (
                await session.execute(
                    select(SandboxRow.id, SandboxRow.auto_hibernate_s).where(
                        SandboxRow.state == "running", SandboxRow.auto_hibernate_s.is_not(None)
                    )
                )
            ).all()
        now = time.monotonic()
        for sandbox_id, idle_s in rows:
            assert idle_s is not None
            node = self._live.get(sandbox_id)
            last = self._active.setdefault(sandbox_id, now)
            if node is None or sandbox_id in self._busy or now - last < idle_s:
                continue
            if self._attached[sandbox_id]:
                self._active[sandbox_id] = now
                continue
            lock = self._locks[sandbox_id]
            if lock.locked():
                continue
            try:
                listing = await node.processes(sandbox_id)
                if any(process.running for process in listing.processes):
                    self._active[sandbox_id] = now
                    continue
                async with lock:
                    if self._live.get(sandbox_id) is not node or self._active[sandbox_id] != last:
                        continue
                    await self._hibernate_vm(sandbox_id, node)
                log.info("sandbox %s idle for %s s; hibernated", sandbox_id, idle_s)
            except (ServiceError, AgentError, ChannelError, VMError) as exc:
                log.warning("auto-hibernate of %s failed: %s", sandbox_id, exc)


async def sandbox_row(session: AsyncSession, principal: Principal, sandbox_id: str) -> SandboxRow:
    row = await session.get(SandboxRow, sandbox_id)
    if row is None or row.tenant_id != principal.tenant_id or row.deleted_at is not None:
        raise SandboxNotFound(sandbox_id)
    return row


def sandbox_public(row: SandboxRow, meter: Meter) -> SandboxPublic:
    return SandboxPublic(
        id=row.id,
        image=row.image,
        image_ref=row.image_ref,
        state=row.state,  # type: ignore[arg-type]  # the column only ever holds SandboxState
        vcpus=row.vcpus,
        memory_mib=row.memory_mib,
        created_at=row.created_at,
        expires_at=row.expires_at,
        env=row.env,
        metadata=row.meta,
        labels=row.labels,
        usage=meter.sandbox(row),
        forked_from=row.forked_from,
        from_snapshot=row.from_snapshot,
        hibernated_at=row.hibernated_at,
        auto_hibernate_s=row.auto_hibernate_s,
    )


def end_hibernation(row: SandboxRow, now: dt.datetime) -> None:
    """Close the row's open hibernation span at ``now`` (its seconds join ``hibernated_s``)."""
    if row.hibernated_at is not None:
        row.hibernated_s = (row.hibernated_s or 0.0) + max(
            (now - row.hibernated_at).total_seconds(), 0.0
        )
        row.hibernated_at = None


async def close_span(session: AsyncSession, sandbox_id: str, now: dt.datetime) -> None:
    await session.execute(
        update(HibernationSpan)
        .where(HibernationSpan.sandbox_id == sandbox_id, HibernationSpan.ended_at.is_(None))
        .values(ended_at=now)
    )
