"""GET /v1/snapshots: cursor pages, newest first, per tenant, filtered by sandbox; on both
engines, with rows written straight to the database (no VM needed to page)."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from api_support import BOTH_ENGINES, assert_problem, auth
from isorun_backend.models import SnapshotRow
from isorun_backend.services import Services
from isorun_backend.services.api_keys import authenticate

pytestmark = [pytest.mark.asyncio(loop_scope="session"), BOTH_ENGINES]

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _snapshot(snapshot_id: str, tenant_id: str, sandbox_id: str, minutes: int) -> SnapshotRow:
    return SnapshotRow(
        id=snapshot_id, tenant_id=tenant_id, sandbox_id=sandbox_id, node="embedded",
        name=None, keep=True, image="busybox", image_ref="r@sha256:" + "0" * 64, vcpus=1,
        memory_mib=128, size_bytes=1 << 20, created_at=T0 + dt.timedelta(minutes=minutes),
    )  # fmt: skip


async def test_snapshot_pages_cover_each_once_newest_first_and_stay_in_the_tenant(
    client: httpx.AsyncClient, services: Services, key: str, other_key: str
) -> None:
    mine = (await authenticate(services.db, key)).tenant_id
    theirs = (await authenticate(services.db, other_key)).tenant_id
    rows = [_snapshot(f"snap-page{i}", mine, f"sb-page{i % 2}", i) for i in range(5)]
    # Two at the same instant: the id breaks the tie.
    rows.append(_snapshot("snap-pagez", mine, "sb-page0", 4))
    rows.append(_snapshot("snap-other", theirs, "sb-page0", 9))
    async with services.db.session() as session, session.begin():
        session.add_all(rows)
    try:
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/snapshots", params=params, headers=auth(key))).json()
            seen += [s["id"] for s in page["data"] if s["id"].startswith("snap-page")]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ["snap-pagez", "snap-page4", "snap-page3", "snap-page2", "snap-page1",
                        "snap-page0"]  # fmt: skip
        only = await client.get(
            "/v1/snapshots", params={"sandbox_id": "sb-page1"}, headers=auth(key)
        )
        assert [s["id"] for s in only.json()["data"]] == ["snap-page3", "snap-page1"]
        theirs_listed = await client.get("/v1/snapshots", headers=auth(other_key))
        assert [s["id"] for s in theirs_listed.json()["data"]] == ["snap-other"]
        bad = await client.get("/v1/snapshots", params={"cursor": "nope"}, headers=auth(key))
        assert_problem(bad, 400, "invalid_request")
    finally:
        async with services.db.session() as session, session.begin():
            for row in rows:
                await session.delete(await session.get(SnapshotRow, row.id))
