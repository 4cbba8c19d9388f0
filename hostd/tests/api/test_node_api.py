"""The node API without VMs: the token check, and hostd errors as problem bodies."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from isorun_hostd.agent_channel import AgentError, ChannelClosed
from isorun_hostd.api import create_app
from isorun_hostd.api.errors import problem
from isorun_hostd.api.models import NodeNetwork, NodeSandboxCreate, request_json
from isorun_hostd.config import Settings
from isorun_hostd.images.errors import ManifestUnknown
from isorun_hostd.net.apply import NetworkError
from isorun_hostd.net.policy import PolicyError
from isorun_hostd.net.spec import EgressPolicy, NetworkSpec, SecretSpec
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
        (NetworkError("nft: refused"), 500, {"code": "network", "error": "NetworkError"}),
        (PolicyError("unknown egress profile"), 400, {"code": "invalid_request"}),
        (RuntimeError("bug"), 500, {"code": "internal"}),
    ],
)
def test_errors_map_to_status_and_a_body_the_backend_can_rebuild(
    exc: Exception, status: int, fields: dict[str, str]
) -> None:
    got_status, body = problem(exc)
    assert got_status == status
    assert fields.items() <= body.model_dump().items()


SECRET = SecretSpec(name="OPENAI_API_KEY", value="sk-live-1", upstream="https://api.openai.com/v1")


def test_a_create_carries_the_secret_values_to_the_node() -> None:
    network = NetworkSpec(policy=EgressPolicy(allow=("pypi.org",)), secrets=(SECRET,))
    body = NodeSandboxCreate(id="sb-1", image_ref="r/x:1", vcpus=1, mem_mib=256, network=network)
    wire = request_json(body)
    assert wire["network"]["secrets"][0]["value"] == "sk-live-1"
    assert NodeSandboxCreate.model_validate(wire).network == network


def test_the_network_view_names_secrets_and_never_holds_their_values() -> None:
    view = NodeNetwork.from_spec(NetworkSpec(secrets=(SECRET,)), {"dropped": 3, "spoofed": 0})
    assert "sk-live-1" not in view.model_dump_json()
    assert view.secrets[0].model_dump() == {
        "name": "OPENAI_API_KEY",
        "upstream": "https://api.openai.com/v1",
        "header_name": "Authorization",
        "base_url_env": None,
    }


def test_network_routes_of_an_unknown_sandbox_are_404(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    got = client.get("/node/v1/sandboxes/sb-none/network", headers=auth)
    assert (got.status_code, got.json()["code"]) == (404, "sandbox_not_found")
    put = client.put(
        "/node/v1/sandboxes/sb-none/network/policy", json={"allow": ["pypi.org"]}, headers=auth
    )
    assert (put.status_code, put.json()["code"]) == (404, "sandbox_not_found")
