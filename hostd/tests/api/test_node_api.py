"""The node API without VMs: the token check, and hostd errors as problem bodies."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from isorun_hostd.agent_channel import AgentError, ChannelClosed
from isorun_hostd.api import create_app
from isorun_hostd.api.errors import problem
from isorun_hostd.config import Settings
from isorun_hostd.images.errors import ManifestUnknown
from isorun_hostd.sandboxes import NoRoom, Runtime
from isorun_hostd.vm.errors import BootTimeout

TOKEN = "node-token-for-tests"


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    runtime = Runtime(Settings(state_dir=tmp_path / "state", run_dir=tmp_path / "run"))
    return TestClient(create_app(runtime, TOKEN))


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "not-bearer"],
)
def test_requests_without_the_node_token_are_refused(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.get("/node/v1/sandboxes", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_with_the_token_the_routes_answer(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/node/v1/sandboxes", headers=auth).json() == {"data": []}
    missing = client.post("/node/v1/sandboxes/sb-none/exec", json={"command": "true"}, headers=auth)
    assert (missing.status_code, missing.json()["code"]) == (404, "sandbox_not_found")


def test_an_app_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        create_app(Runtime(Settings(state_dir=tmp_path, run_dir=tmp_path)), "")


@pytest.mark.parametrize(
    ("exc", "status", "fields"),
    [
        (
            ManifestUnknown("r/x:1", registry="r", target="x:1"),
            422,
            {"code": "image", "error": "ManifestUnknown", "reference": "r/x:1"},
        ),
        (
            AgentError("read", "not_found", "no such file"),
            400,
            {"code": "agent", "op": "read", "agent_code": "not_found", "detail": "no such file"},
        ),
        (ChannelClosed("gone"), 502, {"code": "channel", "error": "ChannelClosed"}),
        (BootTimeout("slow"), 504, {"code": "vm", "error": "BootTimeout"}),
        (NoRoom("full"), 503, {"code": "no_room"}),
        (RuntimeError("bug"), 500, {"code": "internal"}),
    ],
)
def test_errors_map_to_status_and_a_body_the_backend_can_rebuild(
    exc: Exception, status: int, fields: dict[str, str]
) -> None:
    got_status, body = problem(exc)
    assert got_status == status
    assert fields.items() <= body.model_dump().items()
