"""Fork, snapshots, hibernate and resume over the API, with real microVMs (embedded node).

```
source   one python sandbox for the module, a heartbeat process and a file started in it
fork     two clones: distinct entropy and uuid4, files that diverge, the heartbeat in each
snapshot saved, listed, restored (same node), tenant-scoped, collected with its sandbox
hibernate no VM, no usage while hibernated; resumed by an exec with process and /tmp intact
restart  a hibernated sandbox resumes in a second app on the same hostd state
```
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from api_support import BOTH_ENGINES, NewDatabase, assert_problem, auth, make_settings, sh
from isorun_backend.core.config import BackendSettings
from isorun_backend.main import create_app
from isorun_backend.models import QuotaReservation
from isorun_backend.services import Services
from isorun_backend.services.api_keys import authenticate, create_key, create_tenant
from isorun_backend.services.quotas import set_limits
from isorun_hostd.vm.errors import SnapshotError
from sqlalchemy import select

from tests.framework.registry import Registry
from tests.host_tools.leaks import qemu_pids

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session"), BOTH_ENGINES]

CREATE = {"image": "python", "memory_mib": 256, "labels": {"team": "ml"}}
# A background loop that appends a line every 0.2 s: proof that a process survived.
HEARTBEAT = "nohup sh -c 'while :; do echo beat >> /tmp/beats; sleep 0.2; done' >/dev/null 2>&1 &"


async def still_beating(client: httpx.AsyncClient, key: str, sandbox_id: str) -> bool:
    before = int(await sh(client, key, sandbox_id, "wc -l < /tmp/beats"))
    await asyncio.sleep(1.2)
    return int(await sh(client, key, sandbox_id, "wc -l < /tmp/beats")) > before


async def get(client: httpx.AsyncClient, key: str, path: str) -> Any:
    response = await client.get(path, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


async def reservation_ids(services: Services) -> set[str]:
    async with services.db.session() as session:
        return set(await session.scalars(select(QuotaReservation.id)))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def source(client: httpx.AsyncClient, key: str) -> AsyncIterator[str]:
    """The module's python sandbox, with /tmp/shared.txt and the heartbeat running."""
    response = await client.post("/v1/sandboxes", json=CREATE, headers=auth(key))
    assert response.status_code == 201, response.text
    sandbox_id: str = response.json()["id"]
    await sh(client, key, sandbox_id, f"echo from-source > /tmp/shared.txt; {HEARTBEAT}")
    yield sandbox_id
    await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))


async def test_two_forks_differ_diverge_and_keep_the_running_process(
    client: httpx.AsyncClient, key: str, source: str
) -> None:
    response = await client.post(
        f"/v1/sandboxes/{source}/fork", json={"count": 2}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    clones = response.json()["data"]
    try:
        assert len(clones) == 2
        for clone in clones:
            assert clone["state"] == "running" and clone["forked_from"] == source
            assert clone["labels"] == {"team": "ml"} and clone["memory_mib"] == 256
        ids = [clone["id"] for clone in clones]
        listed = await get(client, key, "/v1/sandboxes?label=team=ml&state=running")
        assert set(ids) <= {sb["id"] for sb in listed["data"]}

        everyone = [source, *ids]
        for sb in everyone:
            assert await sh(client, key, sb, "cat /tmp/shared.txt") == "from-source\n"
        for sb in ids:
            assert await still_beating(client, key, sb), f"{sb}: the pre-fork process stopped"
        draws = {await sh(client, key, sb, "head -c 32 /dev/urandom | od -An -tx1") for sb in ids}
        uuid4 = "python3 -c 'import uuid; print(uuid.uuid4())'"
        uuids = {await sh(client, key, sb, uuid4) for sb in everyone}
        assert len(draws) == 2 and len(uuids) == 3
        for i, sb in enumerate(everyone):
            await sh(client, key, sb, f"echo mine > /tmp/only-{i}")
        for i, sb in enumerate(everyone):
            names = (await sh(client, key, sb, "ls /tmp")).split()
            assert [name for name in names if name.startswith("only-")] == [f"only-{i}"]
    finally:
        for clone in clones:
            response = await client.delete(f"/v1/sandboxes/{clone['id']}", headers=auth(key))
            assert response.status_code == 204, response.text


async def test_a_fork_counts_against_the_quota_like_creates(
    client: httpx.AsyncClient, services: Services, key: str, source: str
) -> None:
    principal = await authenticate(services.db, key)
    await set_limits(services.db, principal.tenant_id, sandboxes=1)  # the source has it
    try:
        response = await client.post(
            f"/v1/sandboxes/{source}/fork", json={"count": 2}, headers=auth(key)
        )
        quota = assert_problem(response, 429, "quota_exceeded")["quota"]
        assert (quota["limit"], quota["max"], quota["requested"]) == ("sandboxes", 1, 2)
        assert quota["used"] >= 1
    finally:
        await set_limits(services.db, principal.tenant_id)
    response = await client.post(
        f"/v1/sandboxes/{source}/fork", json={"count": 17}, headers=auth(key)
    )
    assert_problem(response, 422, "invalid_request")


async def test_failed_saves_are_clear_problems_and_leave_the_source_running(
    client: httpx.AsyncClient, services: Services, key: str, source: str, monkeypatch: Any
) -> None:
    async def disk_full(*_args: Any, **_kwargs: Any) -> Any:
        raise SnapshotError("VM x: save failed: No space left on device")

    assert services.runtime is not None
    before = len((await get(client, key, "/v1/sandboxes"))["data"])
    # The database is the session's: other modules' tests may hold reservations of their own.
    held_before = await reservation_ids(services)
    for method in ("fork", "snapshot", "hibernate"):
        monkeypatch.setattr(services.runtime, method, disk_full)
    for path in ("fork", "snapshots", "hibernate"):
        response = await client.post(f"/v1/sandboxes/{source}/{path}", json={}, headers=auth(key))
        body = assert_problem(response, 500, "snapshot_failed")
        assert "No space left" in body["detail"]
    monkeypatch.undo()
    assert (await get(client, key, f"/v1/sandboxes/{source}"))["state"] == "running"
    assert await sh(client, key, source, "cat /tmp/shared.txt") == "from-source\n"
    assert len((await get(client, key, "/v1/sandboxes"))["data"]) == before
    assert (await get(client, key, f"/v1/snapshots?sandbox_id={source}"))["data"] == []
    assert await reservation_ids(services) <= held_before


async def test_snapshots_restore_on_their_node_are_tenant_scoped_and_collected(
    client: httpx.AsyncClient, key: str, other_key: str, source: str
) -> None:
    response = await client.post(
        f"/v1/sandboxes/{source}/snapshots", json={"name": "base"}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    snap = response.json()
    assert (snap["sandbox_id"], snap["name"], snap["keep"]) == (source, "base", False)
    assert snap["id"].startswith("snap-") and snap["size_bytes"] > 0
    assert await get(client, key, f"/v1/snapshots/{snap['id']}") == snap
    listed = await get(client, key, f"/v1/snapshots?sandbox_id={source}")
    assert [s["id"] for s in listed["data"]] == [snap["id"]]
    # The source continues after the save.
    assert await sh(client, key, source, "cat /tmp/shared.txt") == "from-source\n"

    # Another tenant sees none of it.
    for method, path, body in (
        ("GET", f"/v1/snapshots/{snap['id']}", None),
        ("DELETE", f"/v1/snapshots/{snap['id']}", None),
        ("POST", "/v1/sandboxes", {"snapshot": snap["id"]}),
    ):
        response = await client.request(method, path, json=body, headers=auth(other_key))
        assert_problem(response, 404, "snapshot_not_found")
    assert (await get(client, other_key, "/v1/snapshots"))["data"] == []
    response = await client.post(
        "/v1/sandboxes", json={"snapshot": snap["id"], "memory_mib": 512}, headers=auth(key)
    )
    assert_problem(response, 400, "invalid_request")

    response = await client.post(
        "/v1/sandboxes",
        json={"snapshot": snap["id"], "labels": {"from": "snap"}},
        headers=auth(key),
    )
    assert response.status_code == 201, response.text
    restored = response.json()
    try:
        assert restored["from_snapshot"] == snap["id"] and restored["memory_mib"] == 256
        assert restored["image"] == "python" and restored["labels"] == {"from": "snap"}
        assert await sh(client, key, restored["id"], "cat /tmp/shared.txt") == "from-source\n"
        assert await still_beating(client, key, restored["id"])
        assert (await sh(client, key, restored["id"], "hostname")).strip() == restored["id"]

        # Snapshots of the restored sandbox: one kept, one collected with it.
        made = []
        for keep in (True, False):
            response = await client.post(
                f"/v1/sandboxes/{restored['id']}/snapshots", json={"keep": keep}, headers=auth(key)
            )
            assert response.status_code == 201, response.text
            made.append(response.json()["id"])
    finally:
        await client.delete(f"/v1/sandboxes/{restored['id']}", headers=auth(key))
    kept, collected = made
    assert (await client.get(f"/v1/snapshots/{kept}", headers=auth(key))).status_code == 200
    response = await client.get(f"/v1/snapshots/{collected}", headers=auth(key))
    assert_problem(response, 404, "snapshot_not_found")

    for snapshot_id in (kept, snap["id"]):
        response = await client.delete(f"/v1/snapshots/{snapshot_id}", headers=auth(key))
        assert response.status_code == 204
        response = await client.post(
            "/v1/sandboxes", json={"snapshot": snapshot_id}, headers=auth(key)
        )
        assert_problem(response, 404, "snapshot_not_found")


async def test_hibernate_stops_metering_and_an_exec_resumes_with_state_intact(
    client: httpx.AsyncClient, services: Services, key: str, source: str
) -> None:
    response = await client.post(f"/v1/sandboxes/{source}/hibernate", headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "hibernated"
    assert services.runtime is not None and services.runtime.get(source) is None
    again = await client.post(f"/v1/sandboxes/{source}/hibernate", headers=auth(key))
    assert again.json()["state"] == "hibernated"

    # No usage accrues while hibernated: the sandbox's and the usage report's.
    first = await get(client, key, f"/v1/sandboxes/{source}")
    report = await get(client, key, "/v1/usage")
    await asyncio.sleep(1.5)
    later = await get(client, key, f"/v1/sandboxes/{source}")
    assert later["usage"] == first["usage"]
    line = next(
        x for x in (await get(client, key, "/v1/usage"))["data"] if x["sandbox_id"] == source
    )
    assert (
        line["vcpu_seconds"]
        == next(x for x in report["data"] if x["sandbox_id"] == source)["vcpu_seconds"]
    )

    # Saves need it running: a clear 409.
    for path in ("fork", "snapshots"):
        response = await client.post(f"/v1/sandboxes/{source}/{path}", json={}, headers=auth(key))
        body = assert_problem(response, 409, "sandbox_not_running")
        assert "hibernated" in body["detail"]

    # An exec resumes it first: the file and the heartbeat are there.
    assert await sh(client, key, source, "cat /tmp/shared.txt") == "from-source\n"
    resumed = await get(client, key, f"/v1/sandboxes/{source}")
    assert resumed["state"] == "running" and resumed["hibernated_at"] is None
    assert await still_beating(client, key, source)
    assert (await get(client, key, f"/v1/sandboxes/{source}"))["usage"]["vcpu_seconds"] > (
        first["usage"]["vcpu_seconds"]
    )
    response = await client.post(f"/v1/sandboxes/{source}/resume", headers=auth(key))
    assert response.status_code == 200 and response.json()["state"] == "running"


async def test_a_corrupt_hibernation_is_a_clear_problem_and_stays_hibernated(
    client: httpx.AsyncClient, services: Services, key: str
) -> None:
    response = await client.post(
        "/v1/sandboxes", json={"image": "busybox", "memory_mib": 128}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    sandbox_id = response.json()["id"]
    response = await client.post(f"/v1/sandboxes/{sandbox_id}/hibernate", headers=auth(key))
    assert response.status_code == 200, response.text
    assert services.runtime is not None
    state = services.runtime.hibernations.state_path(sandbox_id)
    state.write_bytes(b"not a QEMU state stream" * 100)

    response = await client.post(f"/v1/sandboxes/{sandbox_id}/resume", headers=auth(key))
    assert_problem(response, 500, "snapshot_failed")
    response = await client.post(
        f"/v1/sandboxes/{sandbox_id}/exec", json={"command": "true"}, headers=auth(key)
    )
    assert_problem(response, 500, "snapshot_failed")
    assert (await get(client, key, f"/v1/sandboxes/{sandbox_id}"))["state"] == "hibernated"

    # Deleting it forgets the state on disk; a stopped sandbox cannot be resumed.
    response = await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))
    assert response.status_code == 204
    assert not state.parent.exists()


async def test_an_idle_sandbox_hibernates_itself(client: httpx.AsyncClient, key: str) -> None:
    response = await client.post(
        "/v1/sandboxes",
        json={"image": "busybox", "memory_mib": 128, "auto_hibernate_s": 1},
        headers=auth(key),
    )
    assert response.status_code == 201, response.text
    sandbox_id = response.json()["id"]
    try:
        await sh(client, key, sandbox_id, "echo kept > /tmp/kept")
        for _ in range(100):
            if (await get(client, key, f"/v1/sandboxes/{sandbox_id}"))["state"] == "hibernated":
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the idle sandbox did not hibernate")
        assert await sh(client, key, sandbox_id, "cat /tmp/kept") == "kept\n"
    finally:
        await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))


@pytest.fixture
def restart_settings(
    tmp_path: Path, registry: Registry, settings: BackendSettings, new_database: NewDatabase
) -> Iterator[BackendSettings]:
    # Its own database and VM folder; the hostd state (boot files, images) of the session's.
    run_dir = Path(f"/tmp/isr-hib-{tmp_path.name[-8:]}")
    run_dir.mkdir()
    yield make_settings(
        tmp_path / "data",
        run_dir,
        registry,
        database_url=new_database(),
        hostd_state_dir=settings.hostd().state_dir,
    )
    run_dir.rmdir()


async def test_a_hibernated_sandbox_resumes_after_a_restart(
    restart_settings: BackendSettings,
) -> None:
    first = create_app(restart_settings)
    async with first.router.lifespan_context(first):
        services: Services = first.state.services
        key = (await create_key(services.db, await create_tenant(services.db, "restart"))).key
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=first), base_url="http://t"
        ) as client:
            response = await client.post("/v1/sandboxes", json=CREATE, headers=auth(key))
            assert response.status_code == 201, response.text
            sandbox_id = response.json()["id"]
            await sh(client, key, sandbox_id, f"echo before > /tmp/note; {HEARTBEAT}")
            response = await client.post(f"/v1/sandboxes/{sandbox_id}/hibernate", headers=auth(key))
            assert response.status_code == 200, response.text
    assert not qemu_pids(restart_settings.hostd_run_dir)

    second = create_app(restart_settings)
    async with (
        second.router.lifespan_context(second),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://t") as client,
    ):
        assert (await get(client, key, f"/v1/sandboxes/{sandbox_id}"))["state"] == "hibernated"
        response = await client.post(f"/v1/sandboxes/{sandbox_id}/resume", headers=auth(key))
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "running"
        assert await sh(client, key, sandbox_id, "cat /tmp/note") == "before\n"
        assert await still_beating(client, key, sandbox_id)
        response = await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))
        assert response.status_code == 204
    assert not qemu_pids(restart_settings.hostd_run_dir)
