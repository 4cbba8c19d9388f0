"""End to end: the `isorun-mcp` command, driven by the mcp package's own client, against real
VMs behind `isorun up` (one VM per transport).

The mcp client session is the "framework" here: it is what every MCP host (Claude Desktop,
LangChain's MultiServerMCPClient, the OpenAI Agents SDK's MCPServerStdio) runs underneath.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from isorun import Sandbox
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from tests.framework.isorun_up import Up

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

# Booting under TCG on a shared machine: a create can take tens of seconds.
TOOL_TIMEOUT = timedelta(seconds=240)
# How long a shell test waits for output it expects, shell_read after shell_read.
SHELL_WAIT_S = 90.0


def api_env(up: Up) -> dict[str, str]:
    return {"ISORUN_API_URL": up.url, "ISORUN_API_KEY": up.key}


async def test_stdio_session_drives_a_real_sandbox(up: Up, mcp_command: str) -> None:
    params = StdioServerParameters(command=mcp_command, args=["--profile", "full"], env=api_env(up))
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, read_timeout_seconds=TOOL_TIMEOUT) as client,
    ):
        await client.initialize()
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"sandbox_create", "sandbox_exec", "sandbox_processes"} <= names

        created = await client.call_tool("sandbox_create", {"image": "python", "timeout_s": 600})
        assert not created.isError, created.content
        assert created.structuredContent is not None
        sandbox_id = created.structuredContent["sandbox_id"]
        try:
            wrote = await client.call_tool(
                "sandbox_write_file",
                {"sandbox_id": sandbox_id, "path": "/work/notes/a.txt", "content": "héllo\n"},
            )
            assert wrote.structuredContent == {"path": "/work/notes/a.txt", "size_bytes": 7}
            got = await client.call_tool(
                "sandbox_read_file", {"sandbox_id": sandbox_id, "path": "/work/notes/a.txt"}
            )
            assert got.structuredContent is not None
            assert got.structuredContent["content"] == "héllo\n"

            ran = await client.call_tool(
                "sandbox_exec",
                {
                    "sandbox_id": sandbox_id,
                    "command": "cat a.txt; echo oops >&2; exit 3",
                    "cwd": "/work/notes",
                },
            )
            assert not ran.isError, "a non-zero exit is a result"
            assert ran.structuredContent is not None
            assert ran.structuredContent["exit_code"] == 3
            assert ran.structuredContent["stdout"] == "héllo\n"
            assert ran.structuredContent["stderr"] == "oops\n"
            assert ran.structuredContent["timed_out"] is False
            # The text content (what text-only hosts show the model) is the same JSON.
            [text] = ran.content
            assert isinstance(text, TextContent)
            assert '"exit_code":3' in text.text.replace(" ", "")

            listing = await client.call_tool(
                "sandbox_list_dir", {"sandbox_id": sandbox_id, "path": "/work/notes"}
            )
            assert listing.structuredContent is not None
            assert [e["name"] for e in listing.structuredContent["entries"]] == ["a.txt"]

            missing = await client.call_tool(
                "sandbox_read_file", {"sandbox_id": sandbox_id, "path": "/work/nope.txt"}
            )
            assert missing.isError
            [error] = missing.content
            assert isinstance(error, TextContent)
            assert f"no such file or directory: /work/nope.txt in sandbox {sandbox_id}" in (
                error.text
            )
        finally:
            deleted = await client.call_tool("sandbox_delete", {"sandbox_id": sandbox_id})
        assert deleted.structuredContent == {"sandbox_id": sandbox_id, "deleted": True}
        gone = await client.call_tool("sandbox_exec", {"sandbox_id": sandbox_id, "command": "true"})
        assert gone.isError
    assert sandbox_id not in {info.id for info in Sandbox.list(api_url=up.url, api_key=up.key)}


async def test_streamable_http_session_drives_a_real_sandbox(http_server: str) -> None:
    async with (
        streamable_http_client(http_server) as (read, write, _),
        ClientSession(read, write, read_timeout_seconds=TOOL_TIMEOUT) as client,
    ):
        await client.initialize()
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {
            "sandbox_create",
            "sandbox_exec",
            "sandbox_read_file",
            "sandbox_write_file",
            "sandbox_list_dir",
            "sandbox_delete",
        }
        created = await client.call_tool("sandbox_create", {"timeout_s": 600})
        assert created.structuredContent is not None, created.content
        sandbox_id = created.structuredContent["sandbox_id"]
        try:
            ran = await client.call_tool(
                "sandbox_exec",
                {"sandbox_id": sandbox_id, "command": "python3 -c 'print(6 * 7)'"},
            )
            assert ran.structuredContent is not None, ran.content
            assert (ran.structuredContent["exit_code"], ran.structuredContent["stdout"]) == (
                0,
                "42\n",
            )
        finally:
            deleted = await client.call_tool("sandbox_delete", {"sandbox_id": sandbox_id})
        assert not deleted.isError


async def shell_call(client: ClientSession, name: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured content."""
    result = await client.call_tool(name, arguments)
    assert not result.isError, result.content
    assert result.structuredContent is not None
    return result.structuredContent


async def shell_error(client: ClientSession, name: str, **arguments: Any) -> str:
    """Call a tool that must fail; return the error text the model would read."""
    result = await client.call_tool(name, arguments)
    assert result.isError, result.structuredContent
    [content] = result.content
    assert isinstance(content, TextContent)
    return content.text


def line(text: str) -> str:
    """A regex for `text` as a whole line of terminal output. Before it may come an escape
    sequence and a carriage return (bash turns bracketed paste off before it runs a line:
    `\\x1b[?2004l\\r`), after it `\\r\\n`."""
    return rf"[\r\n]{re.escape(text)}\r?\n"


@dataclass
class ShellTools:
    """One shell, through one MCP session's shell tools."""

    client: ClientSession
    sandbox_id: str
    shell_id: str

    async def call(self, name: str, **arguments: Any) -> dict[str, Any]:
        ids = {"sandbox_id": self.sandbox_id, "shell_id": self.shell_id}
        return await shell_call(self.client, name, **ids, **arguments)

    async def write(self, text: str, wait_ms: int = 1000) -> str:
        written = await self.call("shell_write", input=text, wait_ms=wait_ms)
        assert written["exited"] is False, written
        output: str = written["output"]
        return output

    async def read(self, wait_ms: int = 1000) -> str:
        output: str = (await self.call("shell_read", wait_ms=wait_ms))["output"]
        return output

    async def expect(self, pattern: str, seen: str = "") -> str:
        """`seen` and what shell_read gives after it, until `pattern` (a regex) is in there."""
        deadline = time.monotonic() + SHELL_WAIT_S
        while not re.search(pattern, seen):
            assert time.monotonic() < deadline, f"no {pattern!r} in {seen!r}"
            seen += await self.read()
        return seen


async def test_shell_tools_drive_a_persistent_shell(up: Up, mcp_command: str) -> None:
    params = StdioServerParameters(command=mcp_command, args=["--profile", "full"], env=api_env(up))
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, read_timeout_seconds=TOOL_TIMEOUT) as client,
    ):
        await client.initialize()
        created = await shell_call(client, "sandbox_create", image="python", timeout_s=600)
        sandbox_id = created["sandbox_id"]
        try:
            opened = await shell_call(client, "shell_open", sandbox_id=sandbox_id)
            assert opened["shell_id"].startswith("sh-")
            assert opened["exited"] is False
            shell = ShellTools(client, sandbox_id, opened["shell_id"])
            await check_commands_loop_and_ctrl_c(shell)
            await check_signal_and_replay(shell, params)
            await check_close_and_unknown_ids(shell)
        finally:
            await client.call_tool("sandbox_delete", {"sandbox_id": sandbox_id})


async def check_commands_loop_and_ctrl_c(shell: ShellTools) -> None:
    # The echo of the line shows `6*7`; the answer is a line of its own.
    out = await shell.expect(line("42"), await shell.write("echo $((6*7))\n", 2000))
    assert "echo $((6*7))" in out

    # A loop goes on after shell_write returns; each shell_read gives what is new.
    # The loop runs in its own sh, so Ctrl-C kills it for sure: bash's own loop loses a Ctrl-C
    # that lands while it forks the next command.
    loop = "sh -c 'for i in $(seq 1 100000); do echo tick$i; sleep 0.2; done'\n"
    first = await shell.expect(r"tick3\r", await shell.write(loop, 500))
    last_seen = max(int(n) for n in re.findall(r"tick(\d+)\r", first))
    later = await shell.expect(r"tick\d+\r")
    ticks = [int(n) for n in re.findall(r"tick(\d+)\r", later)]
    assert min(ticks) > last_seen, (first, later)
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))

    # Ctrl-C stops it: the shell answers again, and nothing more ticks.
    await shell.write("\x03")
    await shell.expect(line("stopped-2"), await shell.write("echo stopped-$((1+1))\n"))
    assert "tick" not in await shell.read(1500)


async def check_signal_and_replay(shell: ShellTools, params: StdioServerParameters) -> None:
    # shell_signal reaches the job in front: sleep dies of SIGINT (status 130).
    await shell.write("sleep 300\n", 500)
    signalled = await shell.call("shell_signal", signal="INT")
    assert signalled == {"shell_id": shell.shell_id, "signal": 2, "target": "foreground"}
    await shell.expect(line("status=130"), await shell.write("echo status=$?\n"))

    # Another server process (a restart) attaches afresh: the scrollback comes first.
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, read_timeout_seconds=TOOL_TIMEOUT) as other,
    ):
        await other.initialize()
        replay = await ShellTools(other, shell.sandbox_id, shell.shell_id).read()
        assert re.search(line("42"), replay), replay
    # Its read did not take the writer's role: this session's input still counts.
    await shell.expect(line("back-5"), await shell.write("echo back-$((2+3))\n"))


async def check_close_and_unknown_ids(shell: ShellTools) -> None:
    client, sandbox_id, shell_id = shell.client, shell.sandbox_id, shell.shell_id
    listed = await shell_call(client, "shell_list", sandbox_id=sandbox_id)
    assert [s["shell_id"] for s in listed["shells"]] == [shell_id]
    assert listed["shells"][0]["running"] is True

    closed = await shell.call("shell_close")
    assert closed["closed"] is True
    deadline = time.monotonic() + SHELL_WAIT_S
    while shell_id in {s["shell_id"] for s in listed["shells"]}:
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.5)
        listed = await shell_call(client, "shell_list", sandbox_id=sandbox_id)
    # A closed shell is not listed as running even with include_ended (the API drops it).
    ended = await shell_call(client, "shell_list", sandbox_id=sandbox_id, include_ended=True)
    assert all(not s["running"] for s in ended["shells"] if s["shell_id"] == shell_id)

    for tool, extra in (("shell_write", {"input": "true\n"}), ("shell_read", {})):
        text = await shell_error(
            client, tool, sandbox_id=sandbox_id, shell_id="sh-000000000000", **extra
        )
        assert f"shell sh-000000000000 not found in sandbox {sandbox_id}" in text
