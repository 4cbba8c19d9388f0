"""End to end: the `isorun-mcp` command, driven by the mcp package's own client, against real
VMs behind `isorun up` (one VM per transport).

The mcp client session is the "framework" here: it is what every MCP host (Claude Desktop,
LangChain's MultiServerMCPClient, the OpenAI Agents SDK's MCPServerStdio) runs underneath.
"""

from __future__ import annotations

from datetime import timedelta

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
