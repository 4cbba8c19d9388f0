"""A sandbox's network over the API: checked at create, kept with the row, never shown whole.

```
refused    unknown profile (the known ones named), bad entries, http upstreams, duplicate
           secret names: before any VM boots
one VM     created with a policy and a secret: GET shows names and upstreams, never the value
           (nor does any answer or log line); PATCH replaces what it gives
saved      fork copies it; a snapshot's restore takes its sandbox's; a resume after hostd
           forgot it gets it back from the row
```
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from api_support import BOTH_ENGINES, assert_problem, auth
from isorun_backend.models import SandboxRow
from isorun_backend.services import Services

pytestmark = [pytest.mark.asyncio(loop_scope="session"), BOTH_ENGINES]

VALUE = "sk-test-never-shown-8d1f"
SECRET = {
    "name": "OPENAI_API_KEY",
    "value": VALUE,
    "upstream": "https://api.openai.com/v1",
    "base_url_env": "OPENAI_BASE_URL",
}
NETWORK = {"profile": "openai", "deny": ["0.0.0.0/0"], "allow": ["pypi.org"], "secrets": [SECRET]}


async def create(
    client: httpx.AsyncClient, key: str, network: Any, timeout_s: int = 300
) -> httpx.Response:
    body = {"image": "python", "memory_mib": 256, "network": network, "timeout_s": timeout_s}
    return await client.post("/v1/sandboxes", json=body, headers=auth(key))


@pytest.mark.parametrize(
    ("network", "status", "words"),
    [
        ({"profile": "nope"}, 400, ["unknown egress profile 'nope'", "locked-down", "openai"]),
        ({"allow": ["10.0.0.1/8"]}, 400, ["10.0.0.1/8"]),
        ({"deny": ["*"]}, 400, ["'*'"]),
        ({"secrets": [{**SECRET, "upstream": "http://api.openai.com"}]}, 422, ["https"]),
        ({"secrets": [{**SECRET, "header": "Authorization: Bearer"}]}, 422, ["{value}"]),
        ({"secrets": [SECRET, SECRET]}, 400, ["unique"]),
        ({"allow": ["pypi.org"], "ports": [443]}, 422, ["ports"]),
    ],
    ids=["profile", "host-bits", "bare-wildcard", "http", "header", "duplicate", "extra"],
)
async def test_a_bad_network_is_refused_before_any_vm(
    client: httpx.AsyncClient,
    key: str,
    *,
    services: Services,
    network: dict[str, Any],
    status: int,
    words: list[str],
) -> None:
    before = len(services.runtime.sandboxes) if services.runtime else 0
    response = await create(client, key, network)
    body = assert_problem(response, status, "invalid_request")
    for word in words:
        assert word in response.text, body
    assert VALUE not in response.text
    assert (len(services.runtime.sandboxes) if services.runtime else 0) == before


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox(client: httpx.AsyncClient, key: str) -> AsyncIterator[str]:
    response = await create(client, key, NETWORK)
    assert response.status_code == 201, response.text
    sandbox_id: str = response.json()["id"]
    yield sandbox_id
    await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))


@pytest.mark.vm
async def test_get_shows_the_policy_and_secret_names_never_values(
    client: httpx.AsyncClient, key: str, sandbox: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    got = await client.get(f"/v1/sandboxes/{sandbox}/network", headers=auth(key))
    assert got.status_code == 200, got.text
    body = got.json()
    assert {k: body[k] for k in ("profile", "allow", "deny")} == {
        "profile": "openai",
        "allow": ["pypi.org"],
        "deny": ["0.0.0.0/0"],
    }
    assert body["secrets"] == [
        {
            "name": "OPENAI_API_KEY",
            "upstream": "https://api.openai.com/v1",
            "header_name": "Authorization",
            "base_url_env": "OPENAI_BASE_URL",
        }
    ]
    assert set(body["drops"]) >= {"dropped", "spoofed"}
    for path in ("", "/network"):
        answer = await client.get(f"/v1/sandboxes/{sandbox}{path}", headers=auth(key))
        assert VALUE not in answer.text
    listing = await client.get("/v1/sandboxes", headers=auth(key))
    assert VALUE not in listing.text
    assert all(VALUE not in record.getMessage() for record in caplog.records)


@pytest.mark.vm
async def test_patch_replaces_what_it_gives(
    client: httpx.AsyncClient, key: str, sandbox: str, services: Services
) -> None:
    url = f"/v1/sandboxes/{sandbox}/network"
    bad = await client.patch(url, json={"profile": "nope"}, headers=auth(key))
    assert "known profiles" in assert_problem(bad, 400, "invalid_request")["detail"]
    changed = await client.patch(url, json={"allow": ["files.pythonhosted.org"]}, headers=auth(key))
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["profile"], body["allow"], body["deny"]) == (
        "openai",
        ["files.pythonhosted.org"],
        ["0.0.0.0/0"],
    )
    assert [s["name"] for s in body["secrets"]] == ["OPENAI_API_KEY"]
    assert services.runtime is not None
    live = services.runtime.get(sandbox)
    assert live is not None and live.network.policy.allow == ("files.pythonhosted.org",)
    async with services.db.session() as session:
        row = await session.get(SandboxRow, sandbox)
    assert row is not None and row.network is not None
    assert row.network["policy"]["allow"] == ["files.pythonhosted.org"]
    assert row.network["secrets"][0]["value"] == VALUE
    await client.patch(url, json={"allow": ["pypi.org"]}, headers=auth(key))


@pytest.mark.vm
async def test_forks_restores_and_resumes_keep_the_network(
    client: httpx.AsyncClient, key: str, sandbox: str, services: Services
) -> None:
    assert services.runtime is not None
    runtime = services.runtime
    fork = await client.post(f"/v1/sandboxes/{sandbox}/fork", headers=auth(key))
    assert fork.status_code == 201, fork.text
    clone = fork.json()["data"][0]["id"]
    snap = await client.post(f"/v1/sandboxes/{sandbox}/snapshots", json={}, headers=auth(key))
    assert snap.status_code == 201, snap.text
    restored = await client.post(
        "/v1/sandboxes", json={"snapshot": snap.json()["id"]}, headers=auth(key)
    )
    assert restored.status_code == 201, restored.text
    restored_id = restored.json()["id"]
    try:
        for other in (clone, restored_id):
            live = runtime.get(other)
            assert live is not None
            assert live.network.policy.allow == ("pypi.org",), other
            assert live.network.secrets[0].value.get_secret_value() == VALUE
        hibernated = await client.post(f"/v1/sandboxes/{clone}/hibernate", headers=auth(key))
        assert hibernated.status_code == 200, hibernated.text
        # What a hostd restart loses: the resume must bring the network from the backend.
        runtime._hibernated_networks.clear()
        resumed = await client.post(f"/v1/sandboxes/{clone}/resume", headers=auth(key))
        assert resumed.status_code == 200, resumed.text
        live = runtime.get(clone)
        assert live is not None
        assert live.network.policy.profile == "openai"
        assert live.network.secrets[0].value.get_secret_value() == VALUE
    finally:
        for other in (clone, restored_id):
            await client.delete(f"/v1/sandboxes/{other}", headers=auth(key))


@pytest.mark.vm
async def test_a_stopped_sandbox_takes_no_network_change(
    client: httpx.AsyncClient, key: str
) -> None:
    response = await create(client, key, None, timeout_s=1)
    assert response.status_code == 201, response.text
    sandbox_id = response.json()["id"]
    url = f"/v1/sandboxes/{sandbox_id}/network"
    got = (await client.get(url, headers=auth(key))).json()
    assert (got["profile"], got["allow"], got["secrets"]) == ("locked-down", [], [])
    for _ in range(100):
        state = (await client.get(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))).json()
        if state["state"] == "stopped":
            break
        await asyncio.sleep(0.1)
    stopped = await client.patch(url, json={"allow": ["pypi.org"]}, headers=auth(key))
    assert_problem(stopped, 409, "sandbox_not_running")
    assert (await client.get(url, headers=auth(key))).json()["drops"] is None
    await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))
