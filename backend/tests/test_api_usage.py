"""Metering arithmetic with a controlled clock, on both engines, and GET /v1/usage."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from api_support import BOTH_ENGINES, NewDatabase, assert_problem, auth
from isorun_backend.core.config import BackendSettings
from isorun_backend.core.security import Principal
from isorun_backend.models import HibernationSpan, SandboxRow
from isorun_backend.services.api_keys import create_tenant
from isorun_backend.services.errors import InvalidRequest
from isorun_backend.services.usage import Meter, UsageService
from isorun_backend.storage import Database

pytestmark = [pytest.mark.asyncio(loop_scope="session"), BOTH_ENGINES]

T0 = dt.datetime(2025, 12, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def _row(
    sandbox_id: str, tenant: str, vcpus: int, memory_mib: int, start: dt.datetime, **kw: object
) -> SandboxRow:
    return SandboxRow(
        id=sandbox_id, tenant_id=tenant, image="busybox", image_ref="r@sha256:" + "0" * 64,
        state="stopped" if kw.get("stopped_at") else "running", vcpus=vcpus,
        memory_mib=memory_mib, env={}, meta={}, labels={}, created_at=start,
        expires_at=start + 24 * HOUR, **kw,
    )  # fmt: skip


@pytest.fixture
def now() -> list[dt.datetime]:
    return [T0 + 2 * HOUR]


@pytest_asyncio.fixture(loop_scope="session")
async def metered(
    new_database: NewDatabase, now: list[dt.datetime]
) -> AsyncIterator[tuple[UsageService, Principal]]:
    """A tenant with three sandboxes; "now" is T0 + 2 h unless a test moves it.

    a: 1 vCPU, 1 GiB,     T0 .. T0+1h        b: 2 vCPU, 2 GiB, T0+30m .. running
    c: 1 vCPU, 512 MiB,   T0-2h .. T0-1h     (and another tenant's sandbox, never counted)
    """
    db = Database(new_database())
    await db.upgrade()
    tenant, other = await create_tenant(db, "metered"), await create_tenant(db, "other")
    async with db.session() as session, session.begin():
        session.add_all(
            [
                _row("sb-a", tenant, 1, 1024, T0, stopped_at=T0 + HOUR),
                _row("sb-b", tenant, 2, 2048, T0 + HOUR / 2),
                _row("sb-c", tenant, 1, 512, T0 - 2 * HOUR, stopped_at=T0 - HOUR,
                     deleted_at=T0 - HOUR),
                _row("sb-x", other, 16, 16384, T0),
            ]
        )  # fmt: skip
    yield UsageService(db, Meter(BackendSettings(), clock=lambda: now[0])), Principal(tenant, "k")
    await db.aclose()


async def test_the_default_price_is_four_cents_an_hour_for_one_vcpu_and_one_gib() -> None:
    meter = Meter(BackendSettings())
    one = meter.totals(1, 1024, 3600).rounded()
    assert one == {"vcpu_seconds": 3600, "gib_seconds": 3600, "cost_usd": 0.04}
    # 2 vCPU-hours at $0.02 and half a GiB-hour at $0.02.
    assert meter.totals(2, 512, 3600).rounded()["cost_usd"] == 0.05
    priced = Meter(BackendSettings(price_vcpu_hour_usd=0.036, price_gib_hour_usd=0.0))
    assert priced.totals(1, 4096, 100).rounded()["cost_usd"] == 0.001


async def test_a_window_clips_each_sandbox_and_sums_the_tenant(
    metered: tuple[UsageService, Principal],
) -> None:
    usage, principal = metered
    report = await usage.report(principal, since=T0, until=T0 + 90 * dt.timedelta(minutes=1))
    lines = {line.sandbox_id: line for line in report.data}
    assert list(lines) == ["sb-a", "sb-b"]
    a, b = lines["sb-a"], lines["sb-b"]
    assert (a.start, a.end) == (T0, T0 + HOUR)
    assert (a.vcpu_seconds, a.gib_seconds, a.cost_usd) == (3600, 3600, 0.04)
    assert (b.start, b.end) == (T0 + HOUR / 2, T0 + 90 * dt.timedelta(minutes=1))
    assert (b.vcpu_seconds, b.gib_seconds, b.cost_usd) == (7200, 7200, 0.08)
    assert (report.vcpu_seconds, report.gib_seconds, report.cost_usd) == (10800, 10800, 0.12)


async def test_without_a_window_everything_up_to_now_counts_deleted_sandboxes_too(
    metered: tuple[UsageService, Principal], now: list[dt.datetime]
) -> None:
    usage, principal = metered
    report = await usage.report(principal)
    assert report.since is None and report.until == now[0]
    assert [line.sandbox_id for line in report.data] == ["sb-c", "sb-a", "sb-b"]
    # c: 1 h of 1 vCPU + 0.5 GiB; a: 1 h of 1 + 1; b: 1.5 h of 2 + 2.
    assert (report.vcpu_seconds, report.gib_seconds) == (3600 + 3600 + 10800, 1800 + 3600 + 10800)
    assert report.cost_usd == pytest.approx(0.03 + 0.04 + 0.12)
    now[0] += HOUR  # the running sandbox keeps accruing; the stopped ones do not
    later = await usage.report(principal)
    assert later.vcpu_seconds - report.vcpu_seconds == 7200
    assert later.cost_usd == pytest.approx(report.cost_usd + 0.08)


async def test_hibernated_spans_are_not_metered_in_the_object_or_a_window(
    new_database: NewDatabase,
) -> None:
    """h: 1 vCPU, 1 GiB from T0; hibernated T0+30m..T0+1h, and again since T0+1h30; now T0+2h."""
    db = Database(new_database())
    await db.upgrade()
    tenant = await create_tenant(db, "hibernating")
    minute = dt.timedelta(minutes=1)
    row = _row("sb-h", tenant, 1, 1024, T0, hibernated_s=1800.0, hibernated_at=T0 + 90 * minute)
    row.state = "hibernated"
    async with db.session() as session, session.begin():
        session.add(row)
        await session.flush()
        session.add_all(
            [
                HibernationSpan(sandbox_id="sb-h", started_at=T0 + 30 * minute, ended_at=T0 + HOUR),
                HibernationSpan(sandbox_id="sb-h", started_at=T0 + 90 * minute),
            ]
        )
    meter = Meter(BackendSettings(), clock=lambda: T0 + 2 * HOUR)
    try:
        assert meter.sandbox(row).vcpu_seconds == 7200 - 1800 - 1800
        usage = UsageService(db, meter)
        whole = await usage.report(Principal(tenant, "k"))
        assert whole.vcpu_seconds == 3600
        window = await usage.report(Principal(tenant, "k"), since=T0 + 45 * minute)
        # 75 min in the window, less 15 min of the first span and 30 of the open one.
        assert window.vcpu_seconds == 30 * 60
    finally:
        await db.aclose()


async def test_a_window_must_be_zoned_and_ordered(
    metered: tuple[UsageService, Principal],
) -> None:
    usage, principal = metered
    with pytest.raises(InvalidRequest, match="since"):
        await usage.report(principal, since=T0, until=T0)
    with pytest.raises(InvalidRequest, match="until"):
        await usage.report(principal, until=T0.replace(tzinfo=None))


async def test_the_usage_route_answers_the_tenants_report(
    client: httpx.AsyncClient, key: str
) -> None:
    response = await client.get("/v1/usage", headers=auth(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "since",
        "until",
        "vcpu_seconds",
        "gib_seconds",
        "cost_usd",
        "url_requests",
        "data",
    }
    params = {"since": "2025-12-01T12:00:00Z", "until": "2025-12-01T11:00:00Z"}
    response = await client.get("/v1/usage", params=params, headers=auth(key))
    assert_problem(response, 400, "invalid_request")
    response = await client.get("/v1/usage", params={"since": "yesterday"}, headers=auth(key))
    assert_problem(response, 422, "invalid_request")
    assert_problem(await client.get("/v1/usage"), 401, "unauthorized")
