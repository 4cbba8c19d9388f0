"""A `SandboxAgent` run by the real `Runner`, scripted by `agents.testing.ScriptedModel`, in a
real isorun VM: the model's tool calls change the VM, and their results come back to it."""

from __future__ import annotations

import io
import tarfile

import isorun
import pytest
from agents import RunConfig, Runner
from agents.run_config import SandboxRunConfig
from agents.sandbox import SandboxAgent
from agents.sandbox.capabilities import Filesystem, Shell
from agents.sandbox.errors import WorkspaceReadNotFoundError
from agents.testing import ScriptedModel, assistant_message, function_call
from isorun_openai_agents import IsorunSandboxClient, IsorunSandboxClientOptions
from openai.types.responses import ResponseCustomToolCall

from tests.framework.isorun_up import Up

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

PATCH = "*** Begin Patch\n*** Add File: notes/hello.txt\n+hello from the agent\n*** End Patch\n"


def tool_outputs(model: ScriptedModel) -> dict[str, str]:
    """The tool results the model was given, by call id."""
    outputs: dict[str, str] = {}
    for call in model.calls:
        for item in call.input if isinstance(call.input, list) else []:
            if isinstance(item, dict) and str(item.get("type", "")).endswith("call_output"):
                outputs[item["call_id"]] = str(item["output"])
    return outputs


async def test_sandbox_agent_writes_and_runs_in_a_vm(isorun_api: Up) -> None:
    model = ScriptedModel(
        [
            [
                ResponseCustomToolCall(
                    type="custom_tool_call", call_id="patch", name="apply_patch", input=PATCH
                )
            ],
            [
                function_call(
                    "exec_command", {"cmd": "cat notes/hello.txt; uname -s"}, call_id="cat"
                )
            ],
            [function_call("exec_command", {"cmd": "ls /no/such/dir"}, call_id="fail")],
            [assistant_message("done")],
        ]
    )
    agent = SandboxAgent(
        name="builder", instructions="work", model=model, capabilities=[Filesystem(), Shell()]
    )
    client = IsorunSandboxClient(api_url=isorun_api.url, api_key=isorun_api.key)
    session = await client.create(options=IsorunSandboxClientOptions(image="python"))
    sandbox_id = session.state.sandbox_id  # type: ignore[attr-defined]
    async with session:
        result = await Runner.run(
            agent,
            "write a note, read it back, then list a missing directory",
            run_config=RunConfig(
                sandbox=SandboxRunConfig(client=client, session=session), tracing_disabled=True
            ),
        )
        assert result.final_output == "done"
        model.assert_complete()

        # The file the apply_patch call asked for, seen through isorun itself.
        async with isorun.AsyncClient(api_url=isorun_api.url, api_key=isorun_api.key) as api:
            vm = await isorun.AsyncSandbox.connect(sandbox_id, client=api)
            assert await vm.files.read_text("/workspace/notes/hello.txt") == "hello from the agent"

        outputs = tool_outputs(model)
        assert "hello from the agent" in outputs["cat"]
        assert "Linux" in outputs["cat"]
        assert "Process exited with code 0" in outputs["cat"]
        # A failing command is a tool result with its exit code, not a crashed run.
        assert "No such file or directory" in outputs["fail"]
        assert "Process exited with code 2" in outputs["fail"]

        # persist_workspace gives a workspace-relative tar; hydrate_workspace lays one out.
        archive = await session.persist_workspace()
        with tarfile.open(fileobj=archive) as tar:
            member = tar.extractfile("./notes/hello.txt")
            assert member is not None and member.read() == b"hello from the agent"
        payload = io.BytesIO()
        with tarfile.open(fileobj=payload, mode="w") as tar:
            info = tarfile.TarInfo("restored.txt")
            info.size = 8
            tar.addfile(info, io.BytesIO(b"restored"))
        payload.seek(0)
        await session.hydrate_workspace(payload)
        assert (await session.read("restored.txt")).read() == b"restored"
        with pytest.raises(WorkspaceReadNotFoundError):
            await session.read("missing.txt")
        assert await session.running()
    # Leaving the session destroys the VM.
    await client.delete(session)
    assert not await session.running()
