"""The Claude Agent SDK's in-process MCP server over an MCP client session (no CLI): tools
listed, calls answered, guest failures as `isError` results; over `FakeBackend` and a real VM.
The whole loop through the CLI is `test_claude_code_loop_vm.py`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from isorun import AsyncSandbox, Sandbox
from isorun.testing import FakeBackend
from isorun_claude.agent_sdk import allowed_tools, isorun_mcp_server
from mcp.client.session import ClientSession
from mcp.shared.memory import create_connected_server_and_client_session
from mcp.types import CallToolResult, TextContent

from tests.framework.isorun_up import Up


def text_of(result: CallToolResult) -> str:
    return "".join(part.text for part in result.content if isinstance(part, TextContent))


@contextlib.asynccontextmanager
async def session_on(sandbox: AsyncSandbox) -> AsyncIterator[ClientSession]:
    server = isorun_mcp_server(sandbox, cwd="/tmp")
    async with create_connected_server_and_client_session(server["instance"]) as session:
        yield session


# Not a fixture: the MCP session's task group must be left in the task that entered it,
# which pytest-asyncio does not promise for an async fixture's teardown.
@contextlib.asynccontextmanager
async def fake_session() -> AsyncIterator[tuple[FakeBackend, ClientSession]]:
    fake = FakeBackend()
    async with (
        AsyncSandbox.create(
            "python", transport=fake, api_key=fake.api_key, api_url="http://fake"
        ) as sb,
        session_on(sb) as session,
    ):
        yield fake, session


def test_allowed_tools_are_claude_code_mcp_names() -> None:
    assert allowed_tools("vm") == ["mcp__vm__exec", "mcp__vm__read_file", "mcp__vm__write_file"]


async def test_tools_listed_with_schemas() -> None:
    async with fake_session() as (_, session):
        listed = await session.list_tools()
    tools = {t.name: t.inputSchema for t in listed.tools}
    assert set(tools) == {"exec", "read_file", "write_file"}
    assert tools["exec"]["required"] == ["command"]
    assert tools["write_file"]["required"] == ["path", "content"]


async def test_calls_and_failures() -> None:
    async with fake_session() as (fake, session):
        fake.script_exec(["bash", "-c", "echo hi"], stdout="hi\n")
        fake.script_exec(["bash", "-c", "false"], stderr="bad", exit_code=1)
        ran = await session.call_tool("exec", {"command": "echo hi"})
        failed = await session.call_tool("exec", {"command": "false"})
        wrote = await session.call_tool("write_file", {"path": "/w/a.txt", "content": "abc"})
        read = await session.call_tool("read_file", {"path": "/w/a.txt"})
        missing = await session.call_tool("read_file", {"path": "/nope"})
        invalid = await session.call_tool("exec", {})

    assert (text_of(ran), ran.isError) == ("hi\n", False)
    assert (text_of(failed), failed.isError) == ("bad\n[exit code 1]", True)
    assert (text_of(wrote), text_of(read)) == ("wrote 3 bytes to /w/a.txt", "abc")
    assert (text_of(missing), missing.isError) == ("/nope: no such file or directory", True)
    assert invalid.isError and "command" in text_of(invalid)
    assert fake.exec_calls[0].cwd == "/tmp"


@pytest.mark.vm
async def test_tools_act_on_a_real_vm(up: Up, vm: Sandbox) -> None:
    sb = await AsyncSandbox.connect(vm.id, api_url=up.url, api_key=up.key)
    try:
        async with session_on(sb) as session:
            await session.call_tool("write_file", {"path": "/tmp/sdk/n.txt", "content": "41"})
            ran = await session.call_tool("exec", {"command": "echo $(( $(cat sdk/n.txt) + 1 ))"})
            failed = await session.call_tool("exec", {"command": "ls /tmp/sdk/missing"})
    finally:
        await sb.aclose()
    assert (text_of(ran), ran.isError) == ("42\n", False)
    assert failed.isError and "[exit code 2]" in text_of(failed)
    assert vm.files.read_text("/tmp/sdk/n.txt") == "41"
