"""Sandbox lifecycle over the API with real VMs: create, get, list, tenancy, idempotency,
keepalive, delete and TTL expiry. Two VMs in all (busybox: the smallest fixture)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from api_support import BOTH_ENGINES, assert_problem, auth
from isorun_backend.services import Services

from tests.framework.registry import Registry

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session"), BOTH_ENGINES]

CREATE = {
    "image": "busybox",
    "memory_mib": 256,
    "timeout_s": 600,
    "env": {"GREETING": "hi"},
    "metadata": {"owner": "tests"},
    "labels": {"team": "ml", "suite": "sandboxes"},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox(client: httpx.AsyncClient, key: str) -> AsyncIterator[dict[str, Any]]:
    headers = {**auth(key), "Idempotency-Key": "create-once"}
    response = await client.post("/v1/sandboxes", json=CREATE, headers=headers)
    assert response.status_code == 201, response.text
    yield response.json()
    await client.delete(f"/v1/sandboxes/{response.json()['id']}", headers=auth(key))


async def test_create_answers_the_sandbox_object(
    sandbox: dict[str, Any], registry: Registry
) -> None:
    assert sandbox["id"].startswith("sb-")
    assert sandbox["image"] == "busybox"
    repo = registry.ref("busybox")
    assert sandbox["image_ref"].startswith(f"{repo}@sha256:")
    assert sandbox["state"] == "running"
    assert (sandbox["vcpus"], sandbox["memory_mib"]) == (1, 256)
    assert (sandbox["env"], sandbox["metadata"], sandbox["labels"]) == (
        CREATE["env"],
        CREATE["metadata"],
        CREATE["labels"],
    )
    created = dt.datetime.fromisoformat(sandbox["created_at"])
    expires = dt.datetime.fromisoformat(sandbox["expires_at"])
    assert sandbox["created_at"].endswith("Z")
    assert expires - created == dt.timedelta(seconds=600)


async def test_the_same_idempotency_key_returns_the_same_sandbox(
    client: httpx.AsyncClient, key: str, sandbox: dict[str, Any]
) -> None:
    headers = {**auth(key), "Idempotency-Key": "create-once"}
    response = await client.post("/v1/sandboxes", json=CREATE, headers=headers)
    assert response.status_code == 201
    assert response.headers["idempotent-replayed"] == "true"
    assert response.json()["id"] == sandbox["id"]
    changed = {**CREATE, "vcpus": 2}
    response = await client.post("/v1/sandboxes", json=changed, headers=headers)
    assert_problem(response, 409, "conflict")


async def test_get_and_list_with_filters_and_pages(
    client: httpx.AsyncClient, key: str, sandbox: dict[str, Any]
) -> None:
    headers = auth(key)
    response = await client.get(f"/v1/sandboxes/{sandbox['id']}", headers=headers)
    got = response.json()
    # A running sandbox's usage grows between the two reads; the rest is what create answered.
    assert got.pop("usage")["vcpu_seconds"] >= sandbox["usage"]["vcpu_seconds"]
    assert got == {k: v for k, v in sandbox.items() if k != "usage"}

    async def ids(**params: Any) -> list[str]:
        response = await client.get("/v1/sandboxes", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["data"]]

    assert sandbox["id"] in await ids()
    assert sandbox["id"] in await ids(state="running", label=["team=ml", "suite=sandboxes"])
    assert sandbox["id"] not in await ids(label="team=web")
    assert sandbox["id"] not in await ids(state="stopped")


async def test_cursor_pages_cover_every_sandbox_once(
    client: httpx.AsyncClient, key: str, services: Services, sandbox: dict[str, Any]
) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    while True:
        response = await client.get("/v1/sandboxes", params=params, headers=auth(key))
        page = response.json()
        assert len(page["data"]) <= 1
        seen += [s["id"] for s in page["data"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert sandbox["id"] in seen
    assert len(seen) == len(set(seen))


async def test_another_tenants_sandbox_does_not_exist_for_them(
    client: httpx.AsyncClient, other_key: str, sandbox: dict[str, Any]
) -> None:
    headers = auth(other_key)
    path = f"/v1/sandboxes/{sandbox['id']}"
    assert_problem(await client.get(path, headers=headers), 404, "sandbox_not_found")
    response = await client.post(f"{path}/exec", json={"command": "id"}, headers=headers)
    assert_problem(response, 404, "sandbox_not_found")
    assert_problem(await client.delete(path, headers=headers), 404, "sandbox_not_found")
    listed = (await client.get("/v1/sandboxes", headers=headers)).json()["data"]
    assert sandbox["id"] not in [s["id"] for s in listed]
    # Their idempotency keys are their own too.
    response = await client.post(
        "/v1/sandboxes",
        json={"image": "nope:latest"},
        headers={**headers, "Idempotency-Key": "create-once"},
    )
    assert_problem(response, 422, "image_rejected")


async def test_keepalive_moves_the_expiry(
    client: httpx.AsyncClient, key: str, sandbox: dict[str, Any]
) -> None:
    before = dt.datetime.now(dt.UTC)
    response = await client.post(
        f"/v1/sandboxes/{sandbox['id']}/keepalive", json={"timeout_s": 3600}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    expires = dt.datetime.fromisoformat(response.json()["expires_at"])
    assert before + dt.timedelta(seconds=3600) <= expires
    assert expires <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3600)


async def test_the_sandbox_env_reaches_exec(
    client: httpx.AsyncClient, key: str, sandbox: dict[str, Any]
) -> None:
    response = await client.post(
        f"/v1/sandboxes/{sandbox['id']}/exec",
        json={"command": "echo $GREETING $EXTRA", "env": {"EXTRA": "there"}},
        headers=auth(key),
    )
    assert response.json()["stdout"] == "hi there\n"


async def test_delete_destroys_the_vm_and_the_sandbox_is_gone(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    headers = auth(key)
    response = await client.post("/v1/sandboxes", json={"image": "busybox"}, headers=headers)
    assert response.status_code == 201, response.text
    sandbox_id = response.json()["id"]
    assert sandbox_id in {s.id for s in services.runtime.sandboxes}
    response = await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=headers)
    assert response.status_code == 204
    assert sandbox_id not in {s.id for s in services.runtime.sandboxes}
    for response in (
        await client.get(f"/v1/sandboxes/{sandbox_id}", headers=headers),
        await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=headers),
    ):
        assert_problem(response, 404, "sandbox_not_found")


async def test_expiry_destroys_the_vm_and_stops_the_sandbox(
    client: httpx.AsyncClient, key: str, services: Services, sandbox: dict[str, Any]
) -> None:
    """Runs last in this module: the module's sandbox is the one that expires."""
    headers = auth(key)
    path = f"/v1/sandboxes/{sandbox['id']}"
    response = await client.post(f"{path}/keepalive", json={"timeout_s": 1}, headers=headers)
    assert response.status_code == 200
    for _ in range(100):
        if (await client.get(path, headers=headers)).json()["state"] == "stopped":
            break
        await asyncio.sleep(0.1)
    stopped = (await client.get(path, headers=headers)).json()
    assert stopped["state"] == "stopped"
    await asyncio.sleep(0.05)
    assert (await client.get(path, headers=headers)).json()["usage"] == stopped["usage"]
    assert sandbox["id"] not in {s.id for s in services.runtime.sandboxes}
    response = await client.post(f"{path}/exec", json={"command": "true"}, headers=headers)
    assert_problem(response, 409, "sandbox_not_running")
    response = await client.post(f"{path}/keepalive", json={"timeout_s": 60}, headers=headers)
    assert_problem(response, 409, "sandbox_not_running")
