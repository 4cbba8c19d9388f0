"""End to end through a real MCP host: the OpenAI Agents SDK's own agent loop (`Runner`, with
the SDK's `ScriptedModel` in place of an LLM, so no network) drives the `isorun-mcp` command,
over stdio and over streamable HTTP, against real VMs behind `isorun up`.

The scripted model reads each tool's output from the input the SDK hands it on its next turn,
as a real model would: the sandbox id for the later calls, the command output, and the errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from agents import Agent, RunConfig, Runner
from agents.items import TResponseOutputItem
from agents.mcp import MCPServer, MCPServerStdio, MCPServerStreamableHttp
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call
from isorun import AsyncSandbox, Sandbox

from tests.framework.isorun_up import Up

pytestmark = [
    pytest.mark.vm,
    pytest.mark.timeout(600),
    # openai-agents 0.24 opens HTTP sessions through mcp 1.x's deprecated streamablehttp_client.
    pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning"),
]

# Booting under TCG on a shared machine: a create can take tens of seconds.
TOOL_TIMEOUT_S = 240.0
RUN_TIMEOUT_S = 480.0

NOTE_PATH = "/work/notes/agent.txt"
NOTE = "written by the agent: héllo\n"
MISSING_PATH = "/work/nope.txt"
FINAL = "The note is written and read back; the sandbox is deleted."


def tool_output(call: ModelCall, call_id: str) -> str:
    """The text of `call_id`'s result in the input the SDK sent the model."""
    assert isinstance(call.input, list), call.input
    for item in call.input:
        if item.get("type") == "function_call_output" and item.get("call_id") == call_id:
            output = item["output"]
            if isinstance(output, str):
                return output
            return "".join(part["text"] for part in output if "text" in part)
    raise AssertionError(f"the model was not sent the output of {call_id}: {call.input}")


class Script:
    """The scripted model's turns, and what it saw of each tool call's output."""

    def __init__(self, up: Up) -> None:
        self.up = up
        self.seen: dict[str, str] = {}
        self.vm_note: str | None = None

    @property
    def sandbox_id(self) -> str:
        sandbox_id: str = json.loads(self.seen["create"])["sandbox_id"]
        return sandbox_id

    def model(self) -> ScriptedModel:
        return ScriptedModel(
            [
                [function_call("sandbox_create", {"timeout_s": 600}, call_id="create")],
                self.after("create", "write", "sandbox_write_file", self.write_args),
                self.after(
                    "write", "cat", "sandbox_exec", lambda: self.exec_args(f"cat {NOTE_PATH}")
                ),
                ModelStep.respond(self.check_vm_then_fail),
                self.after("fail", "missing", "sandbox_read_file", self.missing_args),
                self.after(
                    "missing",
                    "slow",
                    "sandbox_exec",
                    lambda: {**self.exec_args("sleep 60"), "timeout_s": 1},
                ),
                self.after(
                    "slow", "delete", "sandbox_delete", lambda: {"sandbox_id": self.sandbox_id}
                ),
                self.finish_after("delete"),
            ]
        )

    def after(
        self, seen: str, call_id: str, tool: str, arguments: Callable[[], dict[str, Any]]
    ) -> ModelStep:
        """A turn that records the output of call `seen`, then calls `tool`."""

        def respond(call: ModelCall) -> list[TResponseOutputItem]:
            self.seen[seen] = tool_output(call, seen)
            return [function_call(tool, arguments(), call_id=call_id)]

        return ModelStep.respond(respond)

    def finish_after(self, seen: str) -> ModelStep:
        def respond(call: ModelCall) -> list[TResponseOutputItem]:
            self.seen[seen] = tool_output(call, seen)
            return [assistant_message(FINAL)]

        return ModelStep.respond(respond)

    async def check_vm_then_fail(self, call: ModelCall) -> list[TResponseOutputItem]:
        """Record the `cat` output, read the file through the isorun SDK, then run a failure."""
        self.seen["cat"] = tool_output(call, "cat")
        sandbox = await AsyncSandbox.connect(
            self.sandbox_id, api_url=self.up.url, api_key=self.up.key
        )
        try:
            self.vm_note = await sandbox.files.read_text(NOTE_PATH)
        finally:
            await sandbox.aclose()  # closes the handle's client; the sandbox keeps running
        return [
            function_call("sandbox_exec", self.exec_args("echo oops >&2; exit 3"), call_id="fail")
        ]

    def write_args(self) -> dict[str, Any]:
        return {"sandbox_id": self.sandbox_id, "path": NOTE_PATH, "content": NOTE}

    def exec_args(self, command: str) -> dict[str, Any]:
        return {"sandbox_id": self.sandbox_id, "command": command}

    def missing_args(self) -> dict[str, Any]:
        return {"sandbox_id": self.sandbox_id, "path": MISSING_PATH}


@pytest.fixture(params=["stdio", "streamable-http"])
async def server(
    request: pytest.FixtureRequest, up: Up, mcp_command: str
) -> AsyncIterator[MCPServer]:
    """The isorun-mcp server as the SDK's MCP client sees it, connected."""
    mcp_server: MCPServer
    if request.param == "stdio":
        mcp_server = MCPServerStdio(
            {
                "command": mcp_command,
                "env": {"ISORUN_API_URL": up.url, "ISORUN_API_KEY": up.key},
            },
            name="isorun",
            client_session_timeout_seconds=TOOL_TIMEOUT_S,
        )
    else:
        url: str = request.getfixturevalue("http_server")
        mcp_server = MCPServerStreamableHttp(
            {"url": url, "timeout": TOOL_TIMEOUT_S, "sse_read_timeout": TOOL_TIMEOUT_S},
            name="isorun",
            client_session_timeout_seconds=TOOL_TIMEOUT_S,
        )
    async with mcp_server:
        yield mcp_server


async def test_agent_loop_drives_a_real_sandbox(up: Up, server: MCPServer) -> None:
    script = Script(up)
    model = script.model()
    agent = Agent(name="isorun", instructions="Use the sandbox.", model=model, mcp_servers=[server])

    async with asyncio.timeout(RUN_TIMEOUT_S):
        result = await Runner.run(
            agent,
            "Write a note in a sandbox and read it back.",
            max_turns=10,
            run_config=RunConfig(tracing_disabled=True),
        )

    model.assert_complete()
    assert result.final_output == FINAL
    # The SDK offered the model the core profile's tools.
    first = model.first_call
    assert first is not None
    assert {tool.name for tool in first.tools} == {
        "sandbox_create",
        "sandbox_exec",
        "sandbox_read_file",
        "sandbox_write_file",
        "sandbox_list_dir",
        "sandbox_delete",
    }

    # The sandbox state changed as asked, seen through the isorun SDK before the delete...
    assert script.vm_note == NOTE
    assert json.loads(script.seen["write"]) == {
        "path": NOTE_PATH,
        "size_bytes": len(NOTE.encode()),
    }
    # ...and the command output came back to the model.
    cat = json.loads(script.seen["cat"])
    assert (cat["exit_code"], cat["stdout"], cat["timed_out"]) == (0, NOTE, False)

    # Guest-side failures reached the model as tool results, and the run went on: a non-zero
    # exit and a timeout are normal exec results, a missing file is the MCP tool error's text.
    fail = json.loads(script.seen["fail"])
    assert (fail["exit_code"], fail["stderr"]) == (3, "oops\n")
    slow = json.loads(script.seen["slow"])
    assert slow["timed_out"] is True
    assert (
        f"no such file or directory: {MISSING_PATH} in sandbox {script.sandbox_id}"
        in (script.seen["missing"])
    )

    assert json.loads(script.seen["delete"]) == {"sandbox_id": script.sandbox_id, "deleted": True}
    assert list(Sandbox.list(api_url=up.url, api_key=up.key)) == []
