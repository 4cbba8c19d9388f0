"""Per-tenant quotas over the API: the 429 problem, overrides, and no race for the last slot."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from api_support import BOTH_ENGINES, assert_problem, auth
from isorun_backend.core.config import BackendSettings
from isorun_backend.core.security import Principal
from isorun_backend.models import IdempotencyRecord, QuotaReservation, SandboxCreate
from isorun_backend.services import Services
from isorun_backend.services.api_keys import authenticate, create_key, create_tenant
from isorun_backend.services.errors import Conflict, InternalError, QuotaExceeded
from isorun_backend.services.quotas import QuotaService, set_limits
from isorun_hostd.vm.errors import LaunchError
from sqlalchemy import select

pytestmark = [pytest.mark.asyncio(loop_scope="session"), BOTH_ENGINES]

SMALL = {"image": "busybox", "memory_mib": 256}


async def _tenant(services: Services, **limits: int) -> str:
    tenant = await create_tenant(services.db, "quotas")
    await set_limits(services.db, tenant, **limits)
    return (await create_key(services.db, tenant)).key


@pytest.mark.parametrize(
    ("limits", "body", "expected"),
    [
        ({"sandboxes": 0}, SMALL, {"limit": "sandboxes", "max": 0, "used": 0, "requested": 1}),
        ({"vcpus": 2}, {**SMALL, "vcpus": 3}, {"limit": "vcpus", "max": 2, "used": 0,
                                               "requested": 3}),
        ({"memory_mib": 512}, {**SMALL, "memory_mib": 1024},
         {"limit": "memory_mib", "max": 512, "used": 0, "requested": 1024}),
    ],
    ids=["sandboxes", "vcpus", "memory"],
)  # fmt: skip
async def test_a_create_past_a_limit_is_429_naming_it(
    client: httpx.AsyncClient,
    services: Services,
    limits: dict[str, int],
    body: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    key = await _tenant(services, **limits)
    response = await client.post("/v1/sandboxes", json=body, headers=auth(key))
    problem = assert_problem(response, 429, "quota_exceeded")
    assert problem["quota"] == expected
    assert expected["limit"] in problem["detail"]


async def test_a_failed_create_gives_its_reservation_back(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await _tenant(services, sandboxes=1)
    principal: Principal = await authenticate(services.db, key)

    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise LaunchError("QEMU failed: exit 1")

    monkeypatch.setattr(services.runtime, "create", fail)
    for _ in range(2):  # the second is refused by QEMU again, not by a leaked reservation
        with pytest.raises(InternalError):
            await services.sandboxes.create(principal, SandboxCreate(**SMALL))


async def test_an_idempotency_key_is_claimed_with_the_quota_or_not_at_all(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await _tenant(services, sandboxes=0)
    principal: Principal = await authenticate(services.db, key)
    with pytest.raises(QuotaExceeded):
        await services.sandboxes.create(principal, SandboxCreate(**SMALL), "retry-me")
    assert await _claims(services, principal.tenant_id) == []

    # A create in progress holds its key; a second one with it is refused and leaves it held.
    await set_limits(services.db, principal.tenant_id, sandboxes=1)
    booting = asyncio.Event()

    async def stall(*args: Any, **kwargs: Any) -> Any:
        booting.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(services.runtime, "create", stall)
    first = asyncio.create_task(
        services.sandboxes.create(principal, SandboxCreate(**SMALL), "retry-me")
    )
    await booting.wait()
    with pytest.raises(Conflict, match="in progress"):
        await services.sandboxes.create(principal, SandboxCreate(**SMALL), "retry-me")
    assert await _claims(services, principal.tenant_id) == ["retry-me"]
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # The cancelled create gave its key back, so a retry creates again.
    assert await _claims(services, principal.tenant_id) == []


async def _claims(services: Services, tenant_id: str) -> list[str]:
    async with services.db.session() as session:
        keys = await session.scalars(
            select(IdempotencyRecord.key).where(IdempotencyRecord.tenant_id == tenant_id)
        )
        return list(keys)


@pytest.mark.vm
async def test_two_concurrent_creates_do_not_both_take_the_last_slot(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await _tenant(services, sandboxes=1)
    first, second = await asyncio.gather(
        *(client.post("/v1/sandboxes", json=SMALL, headers=auth(key)) for _ in range(2))
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [201, 429], (first.text, second.text)
    created, refused = (first, second) if first.status_code == 201 else (second, first)
    quota = assert_problem(refused, 429, "quota_exceeded")["quota"]
    assert quota == {"limit": "sandboxes", "max": 1, "used": 1, "requested": 1}
    sandbox_id = created.json()["id"]
    response = await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))
    assert response.status_code == 204

    # The deleted sandbox no longer counts: the next create passes the quota (and then fails
    # to boot, which is all this needs to see).
    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise LaunchError("QEMU failed: exit 1")

    monkeypatch.setattr(services.runtime, "create", fail)
    response = await client.post("/v1/sandboxes", json=SMALL, headers=auth(key))
    assert_problem(response, 500, "internal")


async def _held(services: Services, group: str) -> int:
    async with services.db.session() as session:
        ids = await session.scalars(
            select(QuotaReservation.id).where(QuotaReservation.id.like(f"{group}-%"))
        )
        return len(list(ids))


async def test_a_committed_settle_needs_no_second_transaction(
    services: Services, settings: BackendSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await create_tenant(services.db, "quotas")
    quotas = QuotaService(settings, services.db)
    forgotten: list[str] = []
    forget = quotas._forget

    async def record(group: str) -> None:
        forgotten.append(group)
        await forget(group)

    monkeypatch.setattr(quotas, "_forget", record)
    async with quotas.reserve(tenant, 1, 256, count=2) as group:
        assert await _held(services, group) == 2
        async with services.db.session() as session, session.begin():
            await quotas.settle(session, group)
    assert await _held(services, group) == 0
    assert forgotten == []


async def test_a_settle_whose_transaction_rolls_back_is_freed_on_the_way_out(
    services: Services, settings: BackendSettings
) -> None:
    tenant = await create_tenant(services.db, "quotas")
    quotas = QuotaService(settings, services.db)
    with pytest.raises(RuntimeError, match="row insert failed"):
        async with (
            quotas.reserve(tenant, 1, 256) as group,
            services.db.session() as session,
            session.begin(),
        ):
            await quotas.settle(session, group)
            raise RuntimeError("row insert failed")
    assert await _held(services, group) == 0
