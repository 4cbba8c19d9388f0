"""Sandboxes: the rows tenants see, and the VMs behind them on hostd nodes.

```
create    resolve alias ─► one transaction: claim the Idempotency-Key (an earlier create's
          sandbox: replay it) and reserve the quota ─► place (room, image cached, least loaded)
          ─► node create (VM, id chosen here) ─► row "running" naming the node
          node fails: no row, key released · row insert fails: VM destroyed, key released
delete    forget VM ─► destroy it on its node ─► row deleted_at (404 from then on)
reaper    every reaper_interval_s: running rows past expires_at ─► destroy ─► "stopped";
          then reconcile every node (also once at start)
reconcile list the node's VMs: a running row whose VM is there is adopted into ``_live`` (a
          restarted backend finds its remote VMs again); a running row whose VM is gone ─►
          "stopped"; a VM with no running row (an orphan) ─► destroyed. A node that does not
          answer keeps its rows as they are (state unknown) and is tried again next pass.
aclose    embedded node: destroy its VMs ─► their rows "stopped"; remote nodes keep theirs
fork, hibernate, resume, auto-hibernate: services.saved_states (part of this service)
network   GET/PATCH and what create, restore, fork and resume give the node: services.network
restore   POST /v1/sandboxes {"snapshot"}: placed on the node that holds the snapshot; its
          network is the request's, else the snapshot's sandbox's
delete    also forgets a hibernated state, and the sandbox's snapshots not marked ``keep``
```

Invariant: a row is ``running`` only while its VM is in ``_live`` (or its node does not answer).
A VM enters ``_live`` before its row is written and leaves it before it is destroyed, so
between the two a running row always has a VM; the one gap (the row update after a destroy
fails) is closed by reconciliation. Ids with a create or delete in flight are ``_busy``, and
reconciliation leaves them alone; a node with a fork in flight (whose clones the node names,
so they are not ``_busy``) destroys no orphans until it ends. Fork, snapshot, hibernate,
resume and delete of one sandbox take its lock, one at a time. The embedded node's VMs die
with the process (PDEATHSIG), so after a restart its running rows are stopped (hibernated rows
stay: their state is on disk). This assumes one backend process owns the database's
sandboxes; several backends sharing PostgreSQL will need an owner per row.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from isorun_hostd.api.models import NodeInfo, NodeSandbox, network_json
from isorun_hostd.images import ImageError
from isorun_hostd.net.apply import NetworkError
from isorun_hostd.net.policy import load_profiles
from isorun_hostd.net.spec import NetworkSpec
from isorun_hostd.sandboxes import NoRoom, RuntimeRefused
from isorun_hostd.snapshots import SnapshotNotFound as NodeSnapshotNotFound
from isorun_hostd.vm import VMError
from isorun_hostd.vm.errors import BootTimeout, SnapshotError
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from isorun_backend.core.config import BackendSettings
from isorun_backend.core.security import Principal
from isorun_backend.models import (
    IdempotencyRecord,
    SandboxCreate,
    SandboxList,
    SandboxPublic,
    SandboxRow,
    SandboxState,
    SandboxUpdate,
    SnapshotRow,
    utcnow,
)
from isorun_backend.nodes import Node, NodeUnavailable, place
from isorun_backend.services import images
from isorun_backend.services.errors import (
    Conflict,
    InternalError,
    InvalidRequest,
    SandboxNotFound,
    SandboxNotRunning,
    SnapshotFailed,
    SnapshotNotFound,
    Unavailable,
)
from isorun_backend.services.network import Networks, loaded, requested, stored
from isorun_backend.services.quotas import QuotaService
from isorun_backend.services.saved_states import (
    SavedStates,
    close_span,
    end_hibernation,
)
from isorun_backend.services.saved_states import sandbox_public as _public
from isorun_backend.services.saved_states import sandbox_row as _row
from isorun_backend.services.usage import Meter
from isorun_backend.storage import Database

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL = dt.timedelta(hours=24)


class _Replay(Exception):
    """The create's Idempotency-Key names a sandbox an earlier create made."""

    def __init__(self, sandbox_id: str) -> None:
        super().__init__(sandbox_id)
        self.sandbox_id = sandbox_id


@dataclass(frozen=True, slots=True)
class Running:
    """A running sandbox as exec, processes and files need it."""

    id: str
    env: dict[str, str]
    node: Node


class SandboxService(SavedStates, Networks):
    """Owns the map sandbox id -> node, and every change to a sandbox row.

    Call ``start()`` before use and ``aclose()`` at shutdown (the app's lifespan does both);
    they start and close the nodes too.
    """

    def __init__(self, settings: BackendSettings, db: Database, nodes: Sequence[Node]) -> None:
        self._settings = settings
        self._db = db
        self._nodes = {node.name: node for node in nodes}
        self._quotas = QuotaService(settings, db)
        self._meter = Meter(settings)
        # The egress profiles policies are checked against before anything is placed.
        self._profiles = load_profiles(settings.hostd().egress_profiles_path)
        # The VMs this process knows to be running, by the node that runs them.
        self._live: dict[str, Node] = {}
        # Ids with a create or delete in flight: reconciliation must not judge them midway.
        self._busy: set[str] = set()
        # Nodes that did not answer the last reconciliation: their rows' state is unknown.
        self._unreached: set[str] = set()
        self._reaper: asyncio.Task[None] | None = None
        # Per sandbox: fork, snapshot, hibernate and resume one at a time.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Per node: forks in flight, whose clones (named by the node) are not yet ``_live``.
        self._forking: defaultdict[str, int] = defaultdict(int)
        # Last exec, file or process call per sandbox (monotonic), for auto-hibernation.
        self._active: dict[str, float] = {}
        # Clients attached to a shell, per sandbox: they keep it from auto-hibernating.
        self._attached: Counter[str] = Counter()

    async def start(self) -> None:
        """Start the nodes, reconcile rows with their VMs, and start the TTL reaper."""
        for node in self._nodes.values():
            await node.start()
        await self._quotas.forget_reservations()
        await self.reconcile()
        self._reaper = asyncio.create_task(self._bg_reap(), name="isorun-sandbox-reaper")

    async def aclose(self) -> None:
        """Stop the reaper and close the nodes. The embedded node's VMs are destroyed and
        their rows become ``stopped``; remote nodes keep theirs for the next start."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for node in self._nodes.values():
            ids = [sandbox_id for sandbox_id, on in self._live.items() if on is node]
            if not node.keeps_vms:
                for sandbox_id in ids:
                    del self._live[sandbox_id]
            await node.aclose()
            if not node.keeps_vms:
                await self._set_stopped(ids)

    # -- lifecycle -----------------------------------------------------------------------------

    async def create(
        self, principal: Principal, body: SandboxCreate, idempotency_key: str | None = None
    ) -> tuple[SandboxPublic, bool]:
        """Boot a sandbox; returns it and whether it is an earlier create's answer (replay).

        Raises:
            ImageRejected, ImageUnavailable: see services.images.
            Conflict: the Idempotency-Key is in use by a create in progress, or was used with a
                different request.
            QuotaExceeded: the tenant's running sandboxes and creates in flight leave no room.
            InvalidRequest: the network's policy does not compile (an unknown profile names the
                known ones), or the node has no network.
            Unavailable, InternalError: the VM did not boot.
        """
        network = requested(body.network, self._profiles) if body.network is not None else None
        request_hash = _request_hash(body)
        snapshot: SnapshotRow | None = None
        if body.snapshot is not None:
            snapshot = await self._snapshot_row(principal, body.snapshot)
            body = _from_snapshot(body, snapshot)
            reference = snapshot.image_ref
            if network is None:
                network = await self._snapshot_network(snapshot)
        else:
            reference = images.resolve(body.image or "python", self._settings.image_aliases)
        claim = None
        if idempotency_key is not None:
            claim = functools.partial(
                self._claim, principal=principal, key=idempotency_key, request_hash=request_hash
            )
        claimed = False
        try:
            async with self._quotas.reserve(
                principal.tenant_id, body.vcpus, body.memory_mib, first=claim
            ) as reservation:
                claimed = claim is not None
                public = await self._boot(
                    principal,
                    body,
                    reference,
                    idempotency_key,
                    reservation,
                    snapshot=snapshot,
                    network=network,
                )
        except _Replay as replay:
            return await self._public_any(principal, replay.sandbox_id), True
        except BaseException:
            if claimed and idempotency_key is not None:
                await asyncio.shield(self._release(principal, idempotency_key))
            raise
        return public, False

    async def _boot(
        self,
        principal: Principal,
        body: SandboxCreate,
        reference: str,
        idempotency_key: str | None,
        reservation: str,
        *,
        snapshot: SnapshotRow | None,
        network: NetworkSpec | None,
    ) -> SandboxPublic:
        if snapshot is None:
            node, vm = await self._create_vm(reference, body, network)
        else:
            node, vm = await self._restore_vm(snapshot, network)
        self._live[vm.id] = node
        now = utcnow()
        row = SandboxRow(
            id=vm.id,
            node=node.name,
            tenant_id=principal.tenant_id,
            image=body.image or "python",
            image_ref=vm.image_ref,
            state="running",
            vcpus=body.vcpus,
            memory_mib=body.memory_mib,
            env=body.env,
            meta=body.metadata,
            labels=body.labels,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=body.timeout_s),
            from_snapshot=snapshot.id if snapshot is not None else None,
            auto_hibernate_s=body.auto_hibernate_s,
            network=stored(network),
        )
        try:
            async with self._db.session() as session, session.begin():
                session.add(row)
                await self._quotas.settle(session, reservation)
                if idempotency_key is not None:
                    await session.execute(
                        update(IdempotencyRecord)
                        .where(
                            IdempotencyRecord.tenant_id == principal.tenant_id,
                            IdempotencyRecord.key == idempotency_key,
                        )
                        .values(sandbox_id=vm.id)
                    )
        except BaseException:
            self._live.pop(vm.id, None)
            self._busy.discard(vm.id)
            await asyncio.shield(node.destroy(vm.id))
            raise
        self._busy.discard(vm.id)
        log.info("sandbox %s created for %s from %s", vm.id, principal.tenant_id, row.image_ref)
        return _public(row, self._meter)

    async def _create_vm(
        self, reference: str, body: SandboxCreate, network: NetworkSpec | None
    ) -> tuple[Node, NodeSandbox]:
        """Place and boot the VM. Its id stays ``_busy`` until the caller has written its row.

        Raises:
            ImageRejected, ImageUnavailable, InvalidRequest, Unavailable, InternalError.
        """
        sandbox_id = f"sb-{secrets.token_hex(6)}"
        node = await self._place(reference, body.vcpus, body.memory_mib)
        self._busy.add(sandbox_id)
        try:
            try:
                vm = await node.create(
                    sandbox_id,
                    reference,
                    vcpus=body.vcpus,
                    mem_mib=body.memory_mib,
                    network=network,
                )
            except BaseException:
                self._busy.discard(sandbox_id)
                raise
        except ImageError as exc:
            raise images.translate(exc) from exc
        except ValueError as exc:
            raise InvalidRequest(str(exc), field="network") from exc
        except NetworkError as exc:
            raise InternalError(f"the sandbox's network could not be set up: {exc}") from exc
        except NoRoom as exc:
            raise Unavailable(f"node {node.name}: {exc}") from exc
        except RuntimeRefused as exc:
            raise InternalError(f"node {node.name} refused the sandbox: {exc}") from exc
        except BootTimeout as exc:
            raise Unavailable(f"the sandbox did not boot in time: {exc}") from exc
        except VMError as exc:
            raise InternalError(f"the sandbox did not boot: {exc}") from exc
        return node, vm

    async def _restore_vm(
        self, snapshot: SnapshotRow, network: NetworkSpec | None
    ) -> tuple[Node, NodeSandbox]:
        """Boot a sandbox from ``snapshot`` on the node that holds it (no placement: no other
        node has its state). Its id stays ``_busy`` until the caller has written its row.

        Raises:
            SnapshotNotFound, SnapshotFailed, InvalidRequest, Unavailable, InternalError.
        """
        node = self._nodes.get(snapshot.node)
        if node is None:
            raise Unavailable(
                f"snapshot {snapshot.id} is on node {snapshot.node}, which is not configured"
            )
        sandbox_id = f"sb-{secrets.token_hex(6)}"
        self._busy.add(sandbox_id)
        try:
            try:
                vm = await node.restore(snapshot.id, sandbox_id, network=network)
            except BaseException:
                self._busy.discard(sandbox_id)
                raise
        except ValueError as exc:
            raise InvalidRequest(str(exc), field="network") from exc
        except NodeSnapshotNotFound as exc:
            raise SnapshotFailed(
                f"snapshot {snapshot.id} is gone from node {node.name}: {exc}"
            ) from exc
        except NoRoom as exc:
            raise Unavailable(f"node {node.name}: {exc}") from exc
        except SnapshotError as exc:
            raise SnapshotFailed(f"snapshot {snapshot.id} could not be restored: {exc}") from exc
        except (RuntimeRefused, VMError, NetworkError) as exc:
            raise InternalError(f"the sandbox did not start from its snapshot: {exc}") from exc
        return node, vm

    async def _snapshot_network(self, snapshot: SnapshotRow) -> NetworkSpec | None:
        """The network of the sandbox ``snapshot`` was taken of, as its row holds it now (also
        once that sandbox is deleted: rows are kept)."""
        async with self._db.session() as session:
            source = await session.get(SandboxRow, snapshot.sandbox_id)
        return loaded(source.network) if source is not None else None

    def node(self, name: str) -> Node | None:
        """The configured node of that name."""
        return self._nodes.get(name)

    async def _snapshot_row(self, principal: Principal, snapshot_id: str) -> SnapshotRow:
        """Raises: SnapshotNotFound (also for another tenant's snapshot)."""
        async with self._db.session() as session:
            snapshot = await session.get(SnapshotRow, snapshot_id)
        if snapshot is None or snapshot.tenant_id != principal.tenant_id:
            raise SnapshotNotFound(snapshot_id)
        return snapshot

    async def _place(self, reference: str, vcpus: int, mem_mib: int) -> Node:
        """The node to create on: room first, then the image cached, then least loaded.

        Raises:
            Unavailable: no node that answers has room.
        """
        if len(self._nodes) == 1:
            # Nothing to choose; the node itself refuses a create it has no room for.
            return next(iter(self._nodes.values()))
        nodes = list(self._nodes.values())
        answers = await asyncio.gather(*(node.info() for node in nodes), return_exceptions=True)
        reports: dict[str, NodeInfo] = {}
        for node, answer in zip(nodes, answers, strict=True):
            if isinstance(answer, NodeInfo):
                reports[node.name] = answer
            elif isinstance(answer, Exception):
                log.warning("node %s left out of placement: %s", node.name, answer)
            else:
                raise answer
        name = place(reports, vcpus=vcpus, mem_mib=mem_mib, image_ref=reference)
        if name is None:
            raise Unavailable(
                f"no node has room for {vcpus} vCPUs and {mem_mib} MiB "
                f"({len(reports)} of {len(nodes)} nodes answered)"
            )
        return self._nodes[name]

    async def get(self, principal: Principal, sandbox_id: str) -> SandboxPublic:
        """Raises: SandboxNotFound (also for another tenant's sandbox)."""
        async with self._db.session() as session:
            return _public(await _row(session, principal, sandbox_id), self._meter)

    async def listing(
        self,
        principal: Principal,
        *,
        state: SandboxState | None = None,
        labels: dict[str, str] | None = None,
        limit: int,
        cursor: str | None = None,
    ) -> SandboxList:
        """The tenant's sandboxes, newest first, ``limit`` at a time.

        Raises:
            InvalidRequest: ``cursor`` is not one this service handed out.
        """
        query = select(SandboxRow).where(
            SandboxRow.tenant_id == principal.tenant_id, SandboxRow.deleted_at.is_(None)
        )
        if state is not None:
            query = query.where(SandboxRow.state == state)
        for key, value in (labels or {}).items():
            query = query.where(SandboxRow.labels[key].as_string() == value)
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    SandboxRow.created_at < created_at,
                    and_(SandboxRow.created_at == created_at, SandboxRow.id < last_id),
                )
            )
        query = query.order_by(SandboxRow.created_at.desc(), SandboxRow.id.desc()).limit(limit + 1)
        async with self._db.session() as session:
            rows = list(await session.scalars(query))
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
        return SandboxList(
            data=[_public(row, self._meter) for row in page], next_cursor=next_cursor
        )

    async def delete(self, principal: Principal, sandbox_id: str) -> None:
        """Destroy the VM (if running) and delete the sandbox.

        Waits for a fork, snapshot, hibernate or resume of the sandbox in progress.

        Raises:
            SandboxNotFound: no such sandbox, or it was deleted already.
        """
        async with self._locks[sandbox_id]:
            await self._delete(principal, sandbox_id)
        self._locks.pop(sandbox_id, None)
        self._active.pop(sandbox_id, None)
        log.info("sandbox %s deleted", sandbox_id)

    async def _delete(self, principal: Principal, sandbox_id: str) -> None:
        async with self._db.session() as session:
            await _row(session, principal, sandbox_id)
        node = self._live.pop(sandbox_id, None)
        if node is not None:
            self._busy.add(sandbox_id)
            try:
                await node.destroy(sandbox_id)
            except BaseException:
                # Its node did not answer: the VM may well be there still, and so is the row.
                self._live[sandbox_id] = node
                raise
            finally:
                self._busy.discard(sandbox_id)
        async with self._db.session() as session, session.begin():
            row = await _row(session, principal, sandbox_id)
            row.deleted_at = utcnow()
            was = row.state
            if row.state == "hibernated":
                end_hibernation(row, row.deleted_at)
                await close_span(session, sandbox_id, row.deleted_at)
            if row.state in ("running", "hibernated"):
                row.state = "stopped"
                row.stopped_at = row.deleted_at
            node_name = row.node
        node = self._nodes.get(node_name)
        if was == "hibernated" and node is not None:
            try:
                await node.forget_hibernation(sandbox_id)
            except (NodeUnavailable, NodeSnapshotNotFound) as exc:
                log.warning("sandbox %s deleted; its hibernated state stays: %s", sandbox_id, exc)
        await self._collect_snapshots(sandbox_id)

    async def _collect_snapshots(self, sandbox_id: str) -> None:
        """Delete the snapshots of a deleted sandbox that are not marked ``keep``."""
        async with self._db.session() as session:
            snapshots = list(
                await session.scalars(
                    select(SnapshotRow).where(
                        SnapshotRow.sandbox_id == sandbox_id, SnapshotRow.keep.is_(False)
                    )
                )
            )
        for snapshot in snapshots:
            node = self._nodes.get(snapshot.node)
            try:
                if node is not None:
                    await node.delete_snapshot(snapshot.id)
            except NodeUnavailable as exc:
                log.warning("snapshot %s of %s not collected: %s", snapshot.id, sandbox_id, exc)
                continue
            async with self._db.session() as session, session.begin():
                await session.execute(delete(SnapshotRow).where(SnapshotRow.id == snapshot.id))
            log.info("snapshot %s collected with its sandbox %s", snapshot.id, sandbox_id)

    async def keepalive(
        self, principal: Principal, sandbox_id: str, body: SandboxUpdate
    ) -> SandboxPublic:
        """Move the expiry to ``timeout_s`` from now.

        Raises:
            SandboxNotFound, SandboxNotRunning.
        """
        async with self._db.session() as session, session.begin():
            row = await _row(session, principal, sandbox_id)
            if row.state != "running":
                raise SandboxNotRunning(sandbox_id, row.state)
            row.expires_at = utcnow() + dt.timedelta(seconds=body.timeout_s)
            return _public(row, self._meter)

    async def running(self, principal: Principal, sandbox_id: str) -> Running:
        """The tenant's sandbox and its VM, for exec, processes and files.

        A hibernated sandbox is resumed first.

        Raises:
            SandboxNotFound, SandboxNotRunning, Unavailable (its node does not answer),
            SnapshotFailed, QuotaExceeded (the resume of a hibernated one failed).
        """
        async with self._db.session() as session:
            row = await _row(session, principal, sandbox_id)
        if row.state == "hibernated":
            await self.resume(principal, sandbox_id)
            async with self._db.session() as session:
                row = await _row(session, principal, sandbox_id)
        self._active[sandbox_id] = time.monotonic()
        node = self._live.get(sandbox_id)
        if row.state == "running" and node is None and row.node in self._unreached:
            raise Unavailable(f"node {row.node} of sandbox {sandbox_id} does not answer")
        if row.state != "running" or node is None:
            raise SandboxNotRunning(sandbox_id, "stopped" if row.state == "running" else row.state)
        return Running(sandbox_id, row.env, node)

    @contextlib.contextmanager
    def attached(self, sandbox_id: str) -> Iterator[None]:
        """Count a client attached to one of the sandbox's shells for the block: an attached
        sandbox is in use however quiet it is, so it does not auto-hibernate."""
        self._attached[sandbox_id] += 1
        try:
            yield
        finally:
            self._attached[sandbox_id] -= 1
            if not self._attached[sandbox_id]:
                del self._attached[sandbox_id]
            self._active[sandbox_id] = time.monotonic()

    # -- idempotency ---------------------------------------------------------------------------

    async def _claim(
        self, session: AsyncSession, *, principal: Principal, key: str, request_hash: str
    ) -> None:
        """Claim ``key`` for a new create in the caller's transaction (the quota reservation's).

        Raises:
            _Replay: an earlier create with this key and request made a sandbox.
            Conflict: the key is in use by a create in progress, or with another request.
        """
        record = await session.get(IdempotencyRecord, (principal.tenant_id, key))
        if record is not None and record.created_at < utcnow() - IDEMPOTENCY_TTL:
            await session.delete(record)
            await session.flush()
            record = None
        if record is None:
            session.add(
                IdempotencyRecord(tenant_id=principal.tenant_id, key=key, request_hash=request_hash)
            )
            try:
                await session.flush()
            except IntegrityError as exc:
                # Another request inserted the same key between our read and our insert.
                raise Conflict(f"a create with Idempotency-Key {key!r} is in progress") from exc
            return
        if record.request_hash != request_hash:
            raise Conflict(f"Idempotency-Key {key!r} was used with a different request")
        if record.sandbox_id is None:
            raise Conflict(f"a create with Idempotency-Key {key!r} is in progress")
        raise _Replay(record.sandbox_id)

    async def _release(self, principal: Principal, key: str) -> None:
        """Forget a key whose create failed, so that a retry creates again."""
        async with self._db.session() as session, session.begin():
            record = await session.get(IdempotencyRecord, (principal.tenant_id, key))
            if record is not None and record.sandbox_id is None:
                await session.delete(record)

    async def _public_any(self, principal: Principal, sandbox_id: str) -> SandboxPublic:
        """A sandbox as it is now, deleted or not (an idempotent replay names it either way)."""
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id)
        if row is None or row.tenant_id != principal.tenant_id:
            raise SandboxNotFound(sandbox_id)
        return _public(row, self._meter)

    # -- expiry and reconciliation -------------------------------------------------------------

    async def _bg_reap(self) -> None:
        while True:
            await asyncio.sleep(self._settings.reaper_interval_s)
            try:
                await self.reap()
            except Exception:
                log.exception("sandbox reaper pass failed; retrying next interval")

    async def reap(self) -> None:
        """Stop the sandboxes past their expiry, hibernate the idle ones that ask for it, and
        stop running rows that have no VM here."""
        async with self._db.session() as session:
            expired = list(
                await session.scalars(
                    select(SandboxRow.id).where(
                        SandboxRow.state == "running", SandboxRow.expires_at <= utcnow()
                    )
                )
            )
        stopped = []
        for sandbox_id in expired:
            if sandbox_id in self._busy:
                continue
            node = self._live.pop(sandbox_id, None)
            if node is not None:
                log.info("sandbox %s expired; destroying it", sandbox_id)
                try:
                    await node.destroy(sandbox_id)
                except NodeUnavailable as exc:
                    self._live[sandbox_id] = node
                    log.warning("sandbox %s expired, but %s; retrying", sandbox_id, exc)
                    continue
            stopped.append(sandbox_id)
        await self._set_stopped(stopped)
        await self._auto_hibernate()
        await self.reconcile()

    async def reconcile(self) -> None:
        """Make rows and VMs agree on every node (see the module docstring)."""
        async with self._db.session() as session:
            rows = (
                await session.execute(
                    select(SandboxRow.id, SandboxRow.node).where(SandboxRow.state == "running")
                )
            ).all()
        by_node: dict[str, set[str]] = {}
        for sandbox_id, node_name in rows:
            by_node.setdefault(node_name, set()).add(sandbox_id)
        unknown = sorted(
            sandbox_id
            for name, ids in by_node.items()
            if name not in self._nodes
            for sandbox_id in ids
        )
        if unknown:
            log.warning("sandboxes %s ran on nodes no longer configured; stopped", unknown)
            await self._set_stopped(unknown)
        for node in self._nodes.values():
            await self._reconcile_node(node, by_node.get(node.name, set()))

    async def _reconcile_node(self, node: Node, running_rows: set[str]) -> None:
        # Only ids live before the listing count as gone when missing from it: a create that
        # finishes while the listing is in flight is live, but absent from it.
        known = {sandbox_id for sandbox_id, on in self._live.items() if on is node}
        try:
            present = {vm.id for vm in await node.sandboxes()}
        except NodeUnavailable as exc:
            if node.name not in self._unreached:
                log.warning("%s; its sandboxes keep their state until it answers", exc)
            self._unreached.add(node.name)
            return
        if node.name in self._unreached:
            log.info("node %s answers again", node.name)
        self._unreached.discard(node.name)
        for sandbox_id in sorted(running_rows & present):
            if sandbox_id not in self._live and sandbox_id not in self._busy:
                log.info("sandbox %s found running on node %s", sandbox_id, node.name)
                self._live[sandbox_id] = node
        gone = sorted(
            sandbox_id
            for sandbox_id in running_rows - present - self._busy
            if sandbox_id in known or sandbox_id not in self._live
        )
        for sandbox_id in gone:
            self._live.pop(sandbox_id, None)
        if gone:
            log.warning("sandboxes %s have no VM on node %s; stopped", gone, node.name)
            await self._set_stopped(gone)
        if self._forking[node.name]:
            return  # the clones of a fork in flight are on the node before they are ``_live``
        for sandbox_id in sorted(present - self._live.keys() - self._busy):
            log.warning(
                "VM %s on node %s has no running sandbox; destroying it", sandbox_id, node.name
            )
            await node.destroy(sandbox_id)

    async def _set_stopped(self, ids: list[str]) -> None:
        if not ids:
            return
        async with self._db.session() as session, session.begin():
            await session.execute(
                update(SandboxRow)
                .where(SandboxRow.id.in_(ids), SandboxRow.state == "running")
                .values(state="stopped", stopped_at=utcnow())
            )


def _from_snapshot(body: SandboxCreate, snapshot: SnapshotRow) -> SandboxCreate:
    """The create as the snapshot makes it: its image, vCPUs and memory.

    Raises:
        InvalidRequest: the body asks for another image, vCPU count or memory size.
    """
    given = body.model_fields_set
    for name, wanted, saved in (
        ("image", body.image, snapshot.image),
        ("vcpus", body.vcpus, snapshot.vcpus),
        ("memory_mib", body.memory_mib, snapshot.memory_mib),
    ):
        if name in given and wanted is not None and wanted != saved:
            raise InvalidRequest(
                f"snapshot {snapshot.id} has {name} {saved!r}; leave it out or repeat it",
                field=name,
            )
    return body.model_copy(
        update={"image": snapshot.image, "vcpus": snapshot.vcpus, "memory_mib": snapshot.memory_mib}
    )


def _request_hash(body: SandboxCreate) -> str:
    """Of the whole request, secret values included (pydantic masks them in a dump): a retry
    with another value is another request. ``body.network`` has passed ``requested``."""
    payload = body.model_dump(mode="json", exclude={"network"})
    payload["network"] = network_json(body.network.spec()) if body.network is not None else None
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def encode_cursor(row: SandboxRow | SnapshotRow) -> str:
    """A cursor after ``row`` in a (created_at, id) descending list."""
    raw = json.dumps([row.created_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, last_id = json.loads(raw)
        when = dt.datetime.fromisoformat(created_at)
        if when.tzinfo is None or not isinstance(last_id, str):
            raise ValueError("not a cursor")
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidRequest("not a cursor from an earlier page", field="cursor") from exc
    return when, last_id
