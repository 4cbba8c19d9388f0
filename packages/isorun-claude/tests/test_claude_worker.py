"""`IsorunEnvironmentWorker.serve`: one claimed session item, served from its own VM through
anthropic's real `EnvironmentWorker` flow (heartbeat, event stream, tool dispatch, result
posting, force-stop) against an in-memory Managed Agents API."""

from __future__ import annotations

import json

import pytest
from anthropic.types.beta.environments import BetaSelfHostedWork
from claude_managed_agents_api import ManagedAgentsAPI
from isorun import AsyncClient, Sandbox, Secret
from isorun.testing import FakeBackend
from isorun_claude.worker import IsorunEnvironmentWorker, main

from tests.framework.isorun_up import Up

ITEM = BetaSelfHostedWork.model_construct(
    id="work_1",
    environment_id="env_1",
    secret=None,
    data={"type": "session", "id": "sess_1"},
)


def worker_for(api: ManagedAgentsAPI, sandbox_client: AsyncClient) -> IsorunEnvironmentWorker:
    return IsorunEnvironmentWorker(
        api.client(),
        environment_id="env_1",
        environment_key="envkey",
        workdir="/work",
        sandbox_client=sandbox_client,
        # The scripted turn ends at once: let the session go without the default 60 s grace.
        max_idle=0.1,
    )


async def test_serve_boots_a_vm_for_the_session_and_destroys_it() -> None:
    api = ManagedAgentsAPI(("bash", {"command": "uname"}))
    fake = FakeBackend()
    fake.script_exec(["bash", "-c", "uname"], stdout="Linux\n")

    await worker_for(
        api, AsyncClient(api_key=fake.api_key, api_url="http://x", transport=fake)
    ).serve(ITEM)

    assert api.results() == {"tu_1": (False, "Linux\n")}
    assert fake.exec_calls[0].cwd == "/work"
    assert api.stopped == ["/v1/environments/env_1/work/work_1/stop"]
    assert fake.sandbox_ids == []


@pytest.mark.vm
async def test_serve_runs_the_session_tool_calls_in_a_real_vm(up: Up) -> None:
    api = ManagedAgentsAPI(
        ("write", {"file_path": "notes/todo.txt", "content": "ship it\n"}),
        ("bash", {"command": "cat notes/todo.txt && hostname"}),
        ("bash", {"command": "cat notes/missing.txt"}),
    )
    async with AsyncClient(api_url=up.url, api_key=up.key) as isorun_client:
        await worker_for(api, isorun_client).serve(ITEM)

    results = api.results()
    assert results["tu_1"] == (False, "wrote 8 bytes to notes/todo.txt")
    is_error, output = results["tu_2"]
    assert not is_error and output.startswith("ship it\n")
    is_error, output = results["tu_3"]
    assert is_error and "No such file" in output and "[exit code 1]" in output
    assert api.stopped == ["/v1/environments/env_1/work/work_1/stop"]
    left = Sandbox.list(
        labels={"anthropic-session": "sess_1"}, state="running", api_url=up.url, api_key=up.key
    )
    assert list(left) == []


def test_cli_needs_the_environment_id_and_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ANTHROPIC_ENVIRONMENT_ID", raising=False)
    monkeypatch.delenv("ANTHROPIC_ENVIRONMENT_KEY", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["--environment-id", "env_1"])
    assert exited.value.code == 2
    assert "ANTHROPIC_ENVIRONMENT_KEY" in capsys.readouterr().err


async def test_each_session_vm_gets_the_workers_network_options() -> None:
    api = ManagedAgentsAPI(("bash", {"command": "uname"}))
    fake = FakeBackend()
    secret = Secret(name="GH_TOKEN", value="ghp-1", upstream="https://api.github.com")
    worker = worker_for(api, AsyncClient(api_key=fake.api_key, api_url="http://x", transport=fake))
    worker.allow, worker.profile, worker.secrets = ["pypi.org"], "claude-code", [secret]

    await worker.serve(ITEM)

    [create] = [r for r in fake.requests if (r.method, r.url.path) == ("POST", "/v1/sandboxes")]
    network = json.loads(create.content)["network"]
    assert (network["allow"], network["profile"]) == (["pypi.org"], "claude-code")
    assert [s["name"] for s in network["secrets"]] == ["GH_TOKEN"]
