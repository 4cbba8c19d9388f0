"""Health, authentication, OpenAPI and the refusals that need no VM."""

from __future__ import annotations

import httpx
import pytest
from api_support import BOTH_ENGINES, assert_problem, auth
from isorun_backend.services import Services
from isorun_backend.services.api_keys import create_key, create_tenant, list_keys, revoke_key

from tests.framework.registry import Registry

pytestmark = [pytest.mark.asyncio(loop_scope="session"), BOTH_ENGINES]


async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["accelerator"] in ("kvm", "tcg")
    assert response.headers["x-request-id"].startswith("req_")


async def test_a_sane_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/health", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    response = await client.get("/v1/health", headers={"X-Request-ID": "bad id\twith tab"})
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer isr_" + "x" * 32},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["missing", "unknown", "malformed", "not-bearer"],
)
async def test_requests_without_a_valid_key_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/v1/sandboxes", headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_revoked_key_is_401_and_its_hash_is_all_that_is_kept(
    client: httpx.AsyncClient, services: Services
) -> None:
    tenant = await create_tenant(services.db, "revocation")
    created = await create_key(services.db, tenant, "ci")
    assert created.key.startswith("isr_") and len(created.key) == 36
    assert (await client.get("/v1/sandboxes", headers=auth(created.key))).status_code == 200
    await revoke_key(services.db, created.info.id)
    response = await client.get("/v1/sandboxes", headers=auth(created.key))
    assert_problem(response, 401, "unauthorized")
    [listed] = await list_keys(services.db, tenant)
    assert listed.revoked_at is not None
    assert listed.prefix == created.key[:12]
    assert created.key not in repr(listed)


async def test_openapi_is_served_and_every_route_has_a_tag_name_operation_id(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/openapi.json")
    assert response.status_code == 200
    operations = {
        (method, path): op["operationId"]
        for path, item in response.json()["paths"].items()
        for method, op in item.items()
    }
    assert operations == {
        ("get", "/v1/health"): "health-get",
        ("post", "/v1/sandboxes"): "sandboxes-create",
        ("get", "/v1/sandboxes"): "sandboxes-list",
        ("get", "/v1/sandboxes/{sandbox_id}"): "sandboxes-get",
        ("post", "/v1/sandboxes/{sandbox_id}/fork"): "sandboxes-fork",
        ("post", "/v1/sandboxes/{sandbox_id}/hibernate"): "sandboxes-hibernate",
        ("post", "/v1/sandboxes/{sandbox_id}/resume"): "sandboxes-resume",
        ("post", "/v1/sandboxes/{sandbox_id}/snapshots"): "snapshots-create",
        ("get", "/v1/snapshots"): "snapshots-list",
        ("get", "/v1/snapshots/{snapshot_id}"): "snapshots-get",
        ("delete", "/v1/snapshots/{snapshot_id}"): "snapshots-delete",
        ("delete", "/v1/sandboxes/{sandbox_id}"): "sandboxes-delete",
        ("post", "/v1/sandboxes/{sandbox_id}/keepalive"): "sandboxes-keepalive",
        ("get", "/v1/sandboxes/{sandbox_id}/network"): "sandboxes-get-network",
        ("patch", "/v1/sandboxes/{sandbox_id}/network"): "sandboxes-update-network",
        ("post", "/v1/sandboxes/{sandbox_id}/exec"): "exec-run",
        ("get", "/v1/sandboxes/{sandbox_id}/processes"): "processes-list",
        ("post", "/v1/sandboxes/{sandbox_id}/processes/{pid}/signal"): "processes-signal",
        ("post", "/v1/sandboxes/{sandbox_id}/shells"): "shells-open",
        ("get", "/v1/sandboxes/{sandbox_id}/shells"): "shells-list",
        ("post", "/v1/sandboxes/{sandbox_id}/shells/{shell_id}/resize"): "shells-resize",
        ("post", "/v1/sandboxes/{sandbox_id}/shells/{shell_id}/signal"): "shells-signal",
        ("delete", "/v1/sandboxes/{sandbox_id}/shells/{shell_id}"): "shells-close",
        ("post", "/v1/sandboxes/{sandbox_id}/urls"): "urls-create",
        ("get", "/v1/sandboxes/{sandbox_id}/files/content"): "files-read",
        ("put", "/v1/sandboxes/{sandbox_id}/files/content"): "files-write",
        ("get", "/v1/sandboxes/{sandbox_id}/files"): "files-list",
        ("delete", "/v1/sandboxes/{sandbox_id}/files"): "files-delete",
        ("get", "/v1/sandboxes/{sandbox_id}/files/stat"): "files-stat",
        ("post", "/v1/sandboxes/{sandbox_id}/files/mkdir"): "files-mkdir",
        ("post", "/v1/sandboxes/{sandbox_id}/files/rename"): "files-rename",
        ("get", "/v1/usage"): "usage-get",
        ("get", "/v1/sandboxes/{sandbox_id}/audit"): "audit-list",
        ("get", "/v1/audit/verify"): "audit-verify",
    }


async def test_unknown_route_is_a_not_found_problem(client: httpx.AsyncClient, key: str) -> None:
    assert_problem(await client.get("/v1/nothing-here", headers=auth(key)), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"memory_mib": 0}, "memory_mib"),
        ({"memory_mib": 16385}, "memory_mib"),
        ({"vcpus": -1}, "vcpus"),
        ({"vcpus": 10000}, "vcpus"),
        ({"vcpus": "two"}, "vcpus"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 86401}, "timeout_s"),
        ({"env": {"A": 1}}, "env.A"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_out_of_range_create_is_422_naming_the_field(
    client: httpx.AsyncClient, key: str, body: dict[str, object], field: str
) -> None:
    response = await client.post("/v1/sandboxes", json=body, headers=auth(key))
    problem = assert_problem(response, 422, "invalid_request")
    errors = problem["errors"]
    assert isinstance(errors, list)
    assert [e["field"] for e in errors] == [field]
    assert field in str(problem["detail"])


async def test_broken_json_is_a_400_problem(client: httpx.AsyncClient, key: str) -> None:
    response = await client.post(
        "/v1/sandboxes",
        content=b'{"image": ',
        headers={**auth(key), "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "invalid_request")


async def test_a_floating_tag_is_rejected(
    client: httpx.AsyncClient, key: str, registry: Registry
) -> None:
    for image in ("python:latest", registry.ref("busybox:latest"), "docker.io/library/python"):
        response = await client.post("/v1/sandboxes", json={"image": image}, headers=auth(key))
        problem = assert_problem(response, 422, "image_rejected")
        assert "pin a version tag or a digest" in str(problem["detail"])


async def test_an_unknown_short_name_is_rejected_naming_the_known_ones(
    client: httpx.AsyncClient, key: str
) -> None:
    response = await client.post("/v1/sandboxes", json={"image": "cobol"}, headers=auth(key))
    problem = assert_problem(response, 422, "image_rejected")
    assert "'cobol'" in str(problem["detail"])
    assert "busybox, python" in str(problem["detail"])


async def test_an_image_that_does_not_exist_is_rejected(
    client: httpx.AsyncClient, key: str, registry: Registry
) -> None:
    image = registry.ref("nothing:1.0")
    response = await client.post("/v1/sandboxes", json={"image": image}, headers=auth(key))
    assert_problem(response, 422, "image_rejected")


async def test_an_unreachable_registry_is_502(client: httpx.AsyncClient, key: str) -> None:
    # A loopback port nothing listens on: refused at once, no traffic leaves the machine.
    image = "127.0.0.1:9/isorun/busybox:1.0"
    response = await client.post("/v1/sandboxes", json={"image": image}, headers=auth(key))
    assert_problem(response, 502, "image_unavailable")


async def test_list_refuses_a_bad_cursor_label_or_limit(
    client: httpx.AsyncClient, key: str
) -> None:
    headers = auth(key)
    response = await client.get("/v1/sandboxes", params={"cursor": "garbage"}, headers=headers)
    assert_problem(response, 400, "invalid_request")
    response = await client.get("/v1/sandboxes", params={"label": "novalue"}, headers=headers)
    assert_problem(response, 400, "invalid_request")
    response = await client.get("/v1/sandboxes", params={"limit": 201}, headers=headers)
    assert_problem(response, 422, "invalid_request")
    response = await client.get("/v1/sandboxes", params={"state": "zombie"}, headers=headers)
    assert_problem(response, 422, "invalid_request")


async def test_anything_on_an_unknown_sandbox_is_sandbox_not_found(
    client: httpx.AsyncClient, key: str
) -> None:
    headers = auth(key)
    for method, path, body in [
        ("GET", "/v1/sandboxes/sb-000000000000", None),
        ("DELETE", "/v1/sandboxes/sb-000000000000", None),
        ("POST", "/v1/sandboxes/sb-000000000000/keepalive", {"timeout_s": 10}),
        ("POST", "/v1/sandboxes/sb-000000000000/exec", {"command": "true"}),
        ("GET", "/v1/sandboxes/sb-000000000000/files/stat?path=/", None),
    ]:
        response = await client.request(method, path, json=body, headers=headers)
        problem = assert_problem(response, 404, "sandbox_not_found")
        assert problem["sandbox_id"] == "sb-000000000000"
