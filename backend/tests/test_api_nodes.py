"""The backend over two remote hostd nodes (``isorun-hostd serve`` subprocesses on loopback).

```
nodes     node-a: capacity 1 vCPU · node-b: 2 vCPUs; own state, run folder and token each
backend   create_app(settings with ISORUN_NODES), its lifespan entered per test (and again
          for the restart): closing it leaves remote VMs running, as a killed backend would
```
Every test ends with no QEMU under either node's run folder but those of sandboxes it still
expects, and the module stops both nodes by PID.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import assert_problem, auth, make_settings
from isorun_backend.core.config import BackendSettings
from isorun_backend.main import create_app
from isorun_backend.services import Services
from isorun_backend.services.api_keys import create_key, create_tenant
from node_support import HostdNode

from tests.framework.registry import Registry
from tests.host_tools.leaks import qemu_pids

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]

CREATE = {"image": "busybox", "memory_mib": 256}


@pytest.fixture(scope="module")
def nodes(registry: Registry) -> Iterator[tuple[HostdNode, HostdNode]]:
    with tempfile.TemporaryDirectory(prefix="isr-nodes-") as tmp:
        root = Path(tmp)
        a = HostdNode("node-a", root / "a", root / "ra", "token-a-" + "x" * 24, vcpus=1)
        b = HostdNode("node-b", root / "b", root / "rb", "token-b-" + "y" * 24, vcpus=2)
        try:
            a.start()
            b.start()
            yield a, b
        finally:
            for node in (a, b):
                node.stop()
            for node in (a, b):
                assert not node.wait_no_qemu(), f"{node.name} left QEMU behind"


@pytest.fixture(scope="module")
def node_settings(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry, nodes: tuple[HostdNode, ...]
) -> BackendSettings:
    data = tmp_path_factory.mktemp("backend-nodes")
    return make_settings(
        data, data / "unused-run", registry, nodes=[node.config() for node in nodes]
    )


@asynccontextmanager
async def backend(settings: BackendSettings) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """The app with its lifespan entered; leaving it is a backend going away."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://isorun.test") as c:
            yield c, app.state.services


async def new_key(services: Services) -> str:
    return (await create_key(services.db, await create_tenant(services.db, "nodes"))).key


async def create(client: httpx.AsyncClient, key: str, **extra: Any) -> str:
    response = await client.post("/v1/sandboxes", json={**CREATE, **extra}, headers=auth(key))
    assert response.status_code == 201, response.text
    sandbox_id: str = response.json()["id"]
    return sandbox_id


async def run(client: httpx.AsyncClient, key: str, sandbox_id: str, command: str) -> Any:
    response = await client.post(
        f"/v1/sandboxes/{sandbox_id}/exec", json={"command": command}, headers=auth(key)
    )
    return response


async def test_a_node_refuses_a_wrong_or_missing_token(nodes: tuple[HostdNode, HostdNode]) -> None:
    a, b = nodes
    assert (await asyncio.to_thread(a.get, "/info")).status_code == 200
    assert (await asyncio.to_thread(a.get, "/info", b.token)).status_code == 401
    async with httpx.AsyncClient(trust_env=False, timeout=10) as raw:
        missing = await raw.get(f"{a.url}/node/v1/sandboxes")
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthorized"


async def test_a_backend_with_a_wrong_token_cannot_create(
    node_settings: BackendSettings, nodes: tuple[HostdNode, HostdNode]
) -> None:
    wrong = node_settings.model_copy(
        update={
            "nodes": [
                node.model_copy(update={"token": type(node.token)("wrong")})
                for node in node_settings.nodes
            ]
        }
    )
    async with backend(wrong) as (client, services):
        response = await client.post(
            "/v1/sandboxes", json=CREATE, headers=auth(await new_key(services))
        )
        assert_problem(response, 503, "unavailable")
    assert not any(qemu_pids(node.run_dir) for node in nodes)


async def test_placement_exec_and_files_through_remote_nodes(
    node_settings: BackendSettings, nodes: tuple[HostdNode, HostdNode]
) -> None:
    a, b = nodes
    async with backend(node_settings) as (client, services):
        key = await new_key(services)
        first = await create(client, key)
        second = await create(client, key)
        # Both idle at first: the name breaks the tie; node-a is then full (1 vCPU).
        assert (a.sandbox_ids(), b.sandbox_ids()) == ({first}, {second})
        full = await client.post("/v1/sandboxes", json={**CREATE, "vcpus": 2}, headers=auth(key))
        assert_problem(full, 503, "unavailable")

        result = (await run(client, key, second, "echo hi; echo err >&2; exit 3")).json()
        assert (result["stdout"], result["stderr"], result["exit_code"]) == ("hi\n", "err\n", 3)
        streamed = await client.post(
            f"/v1/sandboxes/{second}/exec",
            json={"command": ["cat"], "stdin": "through the node\n"},
            headers={**auth(key), "Accept": "application/x-ndjson"},
        )
        events = [json.loads(line) for line in streamed.text.splitlines()]
        assert [e["type"] for e in events] == ["start", "stdout", "exit"]
        assert base64.b64decode(events[1]["data"]) == b"through the node\n"
        missing = await client.post(
            f"/v1/sandboxes/{second}/exec", json={"command": ["/nope"]}, headers=auth(key)
        )
        assert_problem(missing, 400, "invalid_request")

        files = f"/v1/sandboxes/{second}/files"
        payload = bytes(range(256)) * 4096  # 1 MiB, several chunks each way
        written = await client.put(
            f"{files}/content",
            params={"path": "/tmp/d/blob", "parents": True},
            content=payload,
            headers=auth(key),
        )
        assert written.json() == {"path": "/tmp/d/blob", "bytes": len(payload)}
        read = await client.get(
            f"{files}/content", params={"path": "/tmp/d/blob"}, headers=auth(key)
        )
        assert read.content == payload
        stat = await client.get(f"{files}/stat", params={"path": "/tmp/d/blob"}, headers=auth(key))
        assert (stat.json()["type"], stat.json()["size"]) == ("file", len(payload))
        assert (
            await client.post(
                f"{files}/rename",
                json={"src": "/tmp/d/blob", "dst": "/tmp/d/b2"},
                headers=auth(key),
            )
        ).status_code == 204
        listing = await client.get(files, params={"path": "/tmp/d"}, headers=auth(key))
        assert [entry["name"] for entry in listing.json()["data"]] == ["b2"]
        gone = await client.get(f"{files}/stat", params={"path": "/tmp/d/blob"}, headers=auth(key))
        assert_problem(gone, 404, "not_found")
        processes = await client.get(f"/v1/sandboxes/{second}/processes", headers=auth(key))
        assert processes.status_code == 200

        for sandbox_id in (first, second):
            deleted = await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))
            assert deleted.status_code == 204
        assert a.sandbox_ids() == b.sandbox_ids() == set()

        # The audit log lives on each node: served through node-b, also after the delete.
        audit = await client.get(f"/v1/sandboxes/{second}/audit", headers=auth(key))
        kinds = [entry["kind"] for entry in audit.json()["data"]]
        assert (kinds[0], kinds[-1]) == ("sandbox.create", "sandbox.destroy")
        assert (kinds.count("exec.end"), kinds.count("exec.refused")) == (2, 1)  # /nope
        report = (await client.get("/v1/audit/verify", headers=auth(key))).json()
        assert report["ok"] and [n["node"] for n in report["nodes"]] == ["node-a", "node-b"]
    assert not a.wait_no_qemu() and not b.wait_no_qemu()


async def test_restarts_of_the_backend_and_of_a_node_leave_nothing_lost_or_orphaned(
    node_settings: BackendSettings, nodes: tuple[HostdNode, HostdNode]
) -> None:
    a, b = nodes
    async with backend(node_settings) as (client, services):
        key = await new_key(services)
        on_a = await create(client, key)
        on_b = await create(client, key)
        assert (a.sandbox_ids(), b.sandbox_ids()) == ({on_a}, {on_b})
    # The backend is gone; the VMs are not.
    assert len(qemu_pids(a.run_dir)) == len(qemu_pids(b.run_dir)) == 1
    # A VM no row knows of: what a backend that died mid-create leaves behind.
    async with httpx.AsyncClient(trust_env=False, timeout=120) as raw:
        orphan = await raw.post(
            f"{b.url}/node/v1/sandboxes",
            json={
                "id": "sb-orphan",
                "image_ref": node_settings.image_aliases["busybox"],
                "vcpus": 1,
                "mem_mib": 128,
            },
            headers={"Authorization": f"Bearer {b.token}"},
        )
    assert orphan.status_code == 201, orphan.text
    assert b.sandbox_ids() == {on_b, "sb-orphan"}

    async with backend(node_settings) as (client, services):
        assert b.sandbox_ids() == {on_b}, "the orphan survived reconciliation"
        assert len(qemu_pids(b.run_dir)) == 1
        listing = await client.get("/v1/sandboxes", params={"state": "running"}, headers=auth(key))
        assert {s["id"] for s in listing.json()["data"]} == {on_a, on_b}
        for sandbox_id, node in ((on_a, "node-a"), (on_b, "node-b")):
            result = (await run(client, key, sandbox_id, "hostname")).json()
            assert result["stdout"] == f"{sandbox_id}\n", node

        a.kill()
        assert not a.wait_no_qemu(), "node-a's QEMU outlived it"
        down = await run(client, key, on_a, "true")
        assert_problem(down, 503, "unavailable")
        # Unknown while node-a is down: its row is left as it was.
        state = (await client.get(f"/v1/sandboxes/{on_a}", headers=auth(key))).json()["state"]
        assert state == "running"

        a.start()
        assert list(a.run_dir.iterdir()) == [], "node-a kept the run folder of a dead VM"
        for _ in range(100):
            sandbox = (await client.get(f"/v1/sandboxes/{on_a}", headers=auth(key))).json()
            if sandbox["state"] == "stopped":
                break
            await asyncio.sleep(0.1)
        assert sandbox["state"] == "stopped"
        stopped = await run(client, key, on_a, "true")
        assert_problem(stopped, 409, "sandbox_not_running")
        assert (await run(client, key, on_b, "true")).json()["exit_code"] == 0

        for sandbox_id in (on_a, on_b):
            deleted = await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))
            assert deleted.status_code == 204
        assert a.sandbox_ids() == b.sandbox_ids() == set()
    assert not a.wait_no_qemu() and not b.wait_no_qemu()


async def test_saved_states_through_remote_nodes_stay_on_their_node(
    node_settings: BackendSettings, nodes: tuple[HostdNode, HostdNode]
) -> None:
    """Snapshots restore on the node that saved them, hibernation frees that node's room and
    a resume needs it back; node-a (1 vCPU) is full with one sandbox."""
    a, b = nodes
    async with backend(node_settings) as (client, services):
        key = await new_key(services)
        on_a = await create(client, key)
        on_b = await create(client, key)
        assert (a.sandbox_ids(), b.sandbox_ids()) == ({on_a}, {on_b})
        assert (await run(client, key, on_a, "echo a > /tmp/who")).status_code == 200

        saved = await client.post(f"/v1/sandboxes/{on_a}/snapshots", json={}, headers=auth(key))
        assert saved.status_code == 201, saved.text
        snapshot_id = saved.json()["id"]
        assert snapshot_id in {s["id"] for s in a.get("/snapshots").json()["data"]}
        no_room = await client.post(f"/v1/sandboxes/{on_a}/fork", json={}, headers=auth(key))
        assert_problem(no_room, 503, "unavailable")
        no_room = await client.post(
            "/v1/sandboxes", json={"snapshot": snapshot_id}, headers=auth(key)
        )
        assert_problem(no_room, 503, "unavailable")  # pinned to node-a, which is full

        forked = await client.post(f"/v1/sandboxes/{on_b}/fork", json={}, headers=auth(key))
        assert forked.status_code == 201, forked.text
        [clone] = forked.json()["data"]
        assert b.sandbox_ids() == {on_b, clone["id"]}

        hibernated = await client.post(f"/v1/sandboxes/{on_a}/hibernate", headers=auth(key))
        assert hibernated.json()["state"] == "hibernated"
        assert a.sandbox_ids() == set()
        restored = await client.post(
            "/v1/sandboxes", json={"snapshot": snapshot_id}, headers=auth(key)
        )
        assert restored.status_code == 201, restored.text
        restored_id = restored.json()["id"]
        assert a.sandbox_ids() == {restored_id}
        assert (await run(client, key, restored_id, "cat /tmp/who")).json()["stdout"] == "a\n"
        full = await client.post(f"/v1/sandboxes/{on_a}/resume", headers=auth(key))
        assert_problem(full, 503, "unavailable")
        assert (await client.get(f"/v1/sandboxes/{on_a}", headers=auth(key))).json()[
            "state"
        ] == "hibernated"

        await client.delete(f"/v1/sandboxes/{restored_id}", headers=auth(key))
        resumed = await client.post(f"/v1/sandboxes/{on_a}/resume", headers=auth(key))
        assert resumed.status_code == 200, resumed.text
        assert (await run(client, key, on_a, "cat /tmp/who")).json()["stdout"] == "a\n"

        for sandbox_id in (on_a, on_b, clone["id"]):
            deleted = await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))
            assert deleted.status_code == 204
        assert a.sandbox_ids() == b.sandbox_ids() == set()
        # The snapshot went with its sandbox.
        assert a.get("/snapshots").json()["data"] == []


async def test_a_remote_sandboxs_network_survives_a_node_restart(
    node_settings: BackendSettings, nodes: tuple[HostdNode, HostdNode]
) -> None:
    """The node API carries the network both ways, and a node restarted while the sandbox was
    hibernated (which forgets the secrets) gets it again from the backend at resume."""
    a, b = nodes
    network = {
        "allow": ["pypi.org"],
        "secrets": [
            {"name": "GH_TOKEN", "value": "ghp-remote-1", "upstream": "https://api.github.com"}
        ],
    }
    async with backend(node_settings) as (client, services):
        key = await new_key(services)
        sandbox_id = await create(client, key, network=network)
        node = a if sandbox_id in a.sandbox_ids() else b
        url = f"/v1/sandboxes/{sandbox_id}/network"
        shown = (await client.get(url, headers=auth(key))).json()
        assert (shown["allow"], shown["drops"] is not None) == (["pypi.org"], True)
        patched = await client.patch(url, json={"deny": ["0.0.0.0/0"]}, headers=auth(key))
        assert patched.status_code == 200, patched.text
        on_node = (await asyncio.to_thread(node.get, f"/sandboxes/{sandbox_id}/network")).json()
        assert on_node["policy"]["deny"] == ["0.0.0.0/0"]

        hibernated = await client.post(f"/v1/sandboxes/{sandbox_id}/hibernate", headers=auth(key))
        assert hibernated.status_code == 200, hibernated.text
        await asyncio.to_thread(node.stop)
        await asyncio.to_thread(node.start)
        resumed = await client.post(f"/v1/sandboxes/{sandbox_id}/resume", headers=auth(key))
        assert resumed.status_code == 200, resumed.text
        on_node = (await asyncio.to_thread(node.get, f"/sandboxes/{sandbox_id}/network")).json()
        assert on_node["policy"] == {
            "profile": "locked-down",
            "allow": ["pypi.org"],
            "deny": ["0.0.0.0/0"],
        }
        assert [s["name"] for s in on_node["secrets"]] == ["GH_TOKEN"]
        assert "ghp-remote-1" not in json.dumps(on_node)
        await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))
    assert not node.wait_no_qemu()
