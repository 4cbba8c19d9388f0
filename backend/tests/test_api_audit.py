"""The audit API over one busybox sandbox: its entries (lifecycle and exec), paged, kept after
its delete, hidden from other tenants; and the verification of the node's chain."""

from __future__ import annotations

import httpx
import pytest
from api_support import assert_problem, auth

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]


async def test_a_sandbox_s_audit_entries(
    client: httpx.AsyncClient, key: str, other_key: str
) -> None:
    created = await client.post(
        "/v1/sandboxes", json={"image": "busybox", "memory_mib": 128}, headers=auth(key)
    )
    assert created.status_code == 201, created.text
    sandbox_id = created.json()["id"]
    ran = await client.post(
        f"/v1/sandboxes/{sandbox_id}/exec", json={"command": ["echo", "hi"]}, headers=auth(key)
    )
    assert ran.json()["exit_code"] == 0
    path = f"/v1/sandboxes/{sandbox_id}/audit"

    first = (await client.get(path, params={"limit": 2}, headers=auth(key))).json()
    assert [e["kind"] for e in first["data"]] == ["sandbox.create", "exec.start"]
    assert first["data"][1]["fields"]["command"] == ["echo", "hi"]
    assert first["next_cursor"] is not None
    rest = await client.get(path, params={"cursor": first["next_cursor"]}, headers=auth(key))
    (end,) = rest.json()["data"]
    assert end["kind"] == "exec.end"
    assert (end["fields"]["exit_code"], end["sandbox_id"]) == (0, sandbox_id)
    assert end["seq"] > first["data"][1]["seq"]

    assert_problem(await client.get(path, headers=auth(other_key)), 404, "sandbox_not_found")
    foreign = await client.get(path, params={"cursor": "x"}, headers=auth(key))
    assert_problem(foreign, 400, "invalid_request")

    assert (
        await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))
    ).status_code == 204
    kinds = [e["kind"] for e in (await client.get(path, headers=auth(key))).json()["data"]]
    assert kinds == ["sandbox.create", "exec.start", "exec.end", "sandbox.destroy"]

    report = (await client.get("/v1/audit/verify", headers=auth(key))).json()
    assert report["ok"] is True
    (node,) = report["nodes"]
    assert node["first_bad"] is None and node["checked"] >= 4
