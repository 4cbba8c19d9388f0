"""Per-tenant quotas: concurrent sandboxes, their vCPUs and their memory.

```
create   reserve(tenant, vcpus, memory_mib, count)  one transaction (a fork reserves its
                                                   clones together, as ``count`` rows):
           lock the tenant row (SELECT ... FOR UPDATE; SQLite: the insert below takes the
             database's single write lock, which serialises the same way)
           insert a reservation ─► count running sandboxes + reservations ─► over a limit?
             QuotaExceeded (the transaction, reservation included, rolls back)
         boot the VM (seconds; the reservation holds the resources meanwhile)
         settle(session, reservation) in the transaction that writes the sandbox row, so the
           resources are counted once, never zero times and never twice
         on any failure the reservation is deleted on the way out (a settle whose transaction
           committed needs no second one: nothing is left to delete)
start    forget_reservations(): a restarted process's creates died with it
```

The limits are BackendSettings.quota_* unless the tenant row overrides them (set_limits).
Deleted, stopped and hibernated sandboxes count for nothing (a resume reserves again).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy import delete, event, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from isorun_backend.core.config import BackendSettings
from isorun_backend.models import QuotaReservation, SandboxRow, Tenant
from isorun_backend.services.errors import NotFound, QuotaExceeded
from isorun_backend.storage import Database


class QuotaService:
    """Checks and holds a tenant's resources for the creates in flight."""

    def __init__(self, settings: BackendSettings, db: Database) -> None:
        self._settings = settings
        self._db = db
        # Groups whose settle committed: reserve's exit has nothing left to delete for them.
        self._settled: set[str] = set()

    @asynccontextmanager
    async def reserve(
        self,
        tenant_id: str,
        vcpus: int,
        memory_mib: int,
        *,
        count: int = 1,
        first: Callable[[AsyncSession], Awaitable[None]] | None = None,
    ) -> AsyncIterator[str]:
        """Hold ``count`` sandboxes of this size (a create: 1; a fork: its clones) for the
        block; yields the reservation group to settle. ``first`` runs in the reservation's
        transaction before the check (a create's Idempotency-Key claim: one commit instead of
        two, and a refused create leaves no claim); what it raises rolls everything back.

        Raises:
            QuotaExceeded: the sandboxes would take the tenant past a limit (the first one
                found, in the order sandboxes, vcpus, memory_mib).
            NotFound: no such tenant.
            Whatever ``first`` raises.
        """
        group = await self._reserve(tenant_id, vcpus, memory_mib, count, first)
        try:
            yield group
        finally:
            if group in self._settled:
                self._settled.discard(group)
            else:
                # No settle, or its transaction rolled back: free the resources.
                await asyncio.shield(self._forget(group))

    async def _reserve(
        self,
        tenant_id: str,
        vcpus: int,
        memory_mib: int,
        count: int,
        first: Callable[[AsyncSession], Awaitable[None]] | None,
    ) -> str:
        group = f"qr-{secrets.token_hex(8)}"
        reservations = [
            QuotaReservation(
                id=f"{group}-{i}", tenant_id=tenant_id, vcpus=vcpus, memory_mib=memory_mib
            )
            for i in range(count)
        ]
        async with self._db.session() as session, session.begin():
            # The row lock serialises this tenant's reservations on PostgreSQL: a concurrent
            # one waits here and, once we commit, counts our reservation.
            tenant = await session.scalar(
                select(Tenant).where(Tenant.id == tenant_id).with_for_update()
            )
            if tenant is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            if first is not None:
                await first(session)
            # Write before counting: on SQLite the first write takes the write lock, so a
            # concurrent reservation cannot count between our count and our commit.
            session.add_all(reservations)
            await session.flush()
            sandboxes, used_vcpus, used_memory = await _in_use(session, tenant_id)
            settings = self._settings
            limits = (
                ("sandboxes", tenant.max_sandboxes, settings.quota_sandboxes, sandboxes, count),
                ("vcpus", tenant.max_vcpus, settings.quota_vcpus, used_vcpus, count * vcpus),
                ("memory_mib", tenant.max_memory_mib, settings.quota_memory_mib, used_memory,
                 count * memory_mib),
            )  # fmt: skip
            for name, override, default, total, requested in limits:
                maximum = default if override is None else override
                if total > maximum:
                    raise QuotaExceeded(
                        name, maximum=maximum, used=total - requested, requested=requested
                    )
        return group

    async def settle(self, session: AsyncSession, group: str) -> None:
        """Drop the reservations inside the caller's transaction (the one adding the rows)."""
        await session.execute(
            delete(QuotaReservation).where(QuotaReservation.id.like(f"{group}-%"))
        )
        # Only a commit makes the delete stick; a rollback leaves the group to ``reserve``.
        event.listen(
            session.sync_session, "after_commit", lambda _s: self._settled.add(group), once=True
        )

    async def _forget(self, group: str) -> None:
        async with self._db.session() as session, session.begin():
            await self.settle(session, group)

    async def forget_reservations(self) -> None:
        """Delete every reservation: at start, those of a process that died mid-create.

        Like the sandbox service's orphan sweep, this assumes one backend owns the database.
        """
        async with self._db.session() as session, session.begin():
            await session.execute(delete(QuotaReservation))


async def set_limits(
    db: Database,
    tenant_id: str,
    *,
    sandboxes: int | None = None,
    vcpus: int | None = None,
    memory_mib: int | None = None,
) -> None:
    """Override a tenant's limits; None restores the deployment's default for that limit.

    Raises:
        NotFound: no such tenant.
    """
    async with db.session() as session, session.begin():
        tenant = await session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        tenant.max_sandboxes = sandboxes
        tenant.max_vcpus = vcpus
        tenant.max_memory_mib = memory_mib


async def _in_use(session: AsyncSession, tenant_id: str) -> tuple[int, int, int]:
    """(sandboxes, vcpus, memory_mib) of the tenant's running sandboxes and reservations."""
    running = select(
        func.count(), func.sum(SandboxRow.vcpus), func.sum(SandboxRow.memory_mib)
    ).where(SandboxRow.tenant_id == tenant_id, SandboxRow.state == "running")
    reserved = select(
        func.count(), func.sum(QuotaReservation.vcpus), func.sum(QuotaReservation.memory_mib)
    ).where(QuotaReservation.tenant_id == tenant_id)
    totals = [0, 0, 0]
    for query in (running, reserved):
        row = (await session.execute(query)).one()
        totals = [total + int(value or 0) for total, value in zip(totals, row, strict=True)]
    return totals[0], totals[1], totals[2]
