"""`sandbox_url`: the full profile's tool for a public URL to a server in a sandbox.

Over the fake API: how the tool presents itself to a model and what it returns. Against real VMs
(`isorun up`, the `isorun-mcp` command over stdio): a model-style session starts
`python3 -m http.server` in a sandbox with sandbox_exec, asks for its URL, and the URL serves the
directory listing through the edge.
"""

from __future__ import annotations

import ssl
from datetime import timedelta
from typing import Any

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, TextContent

from tests.framework.guest_servers import serve_folder
from tests.framework.isorun_up import Up

PORT = 8000
# Waits in the same call: the tool's answer should mean the server is up.
SERVE = serve_folder(PORT, "from-mcp.txt")
# Booting under TCG on a shared machine: a create can take tens of seconds.
TOOL_TIMEOUT = timedelta(seconds=240)
FETCH_TIMEOUT_S = 120.0


async def call(client: ClientSession, name: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured content."""
    result = await client.call_tool(name, arguments)
    assert not result.isError, result.content
    assert result.structuredContent is not None
    return result.structuredContent


def error_text(result: CallToolResult) -> str:
    assert result.isError, result.structuredContent
    [content] = result.content
    assert isinstance(content, TextContent)
    return content.text


async def test_sandbox_url_is_described_for_a_model_and_returns_the_url(connect: Any) -> None:
    async with connect("full") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        tool = tools["sandbox_url"]
        assert "reachable from outside" in (tool.description or "")
        assert tool.inputSchema["required"] == ["sandbox_id", "port"]
        assert tool.inputSchema["properties"]["expires_in_s"]["default"] == 3600
        assert tool.inputSchema["properties"]["public"]["default"] is True
        assert set(tool.outputSchema["properties"]) == {  # type: ignore[index]
            "sandbox_id",
            "url",
            "origin",
            "token",
            "port",
            "public",
            "expires_at",
        }

        sandbox_id = (await call(client, "sandbox_create"))["sandbox_id"]
        url = await call(client, "sandbox_url", sandbox_id=sandbox_id, port=5000, public=False)
        assert url["url"] == f"{url['origin']}/?isorun_token={url['token']}"
        assert (url["sandbox_id"], url["port"], url["public"]) == (sandbox_id, 5000, False)

        refused = await client.call_tool("sandbox_url", {"sandbox_id": sandbox_id, "port": 0})
        assert refused.isError
        missing = await client.call_tool("sandbox_url", {"sandbox_id": "sb-gone", "port": 80})
        assert "sandbox sb-gone not found" in error_text(missing)

    async with connect("core") as client:
        assert "sandbox_url" not in {tool.name for tool in (await client.list_tools()).tools}


@pytest.mark.vm
@pytest.mark.timeout(600)
async def test_a_server_started_with_sandbox_exec_is_reachable_at_its_url(
    up: Up, mcp_command: str
) -> None:
    env = {"ISORUN_API_URL": up.url, "ISORUN_API_KEY": up.key}
    params = StdioServerParameters(command=mcp_command, args=["--profile", "full"], env=env)
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, read_timeout_seconds=TOOL_TIMEOUT) as client,
    ):
        await client.initialize()
        sandbox_id = (await call(client, "sandbox_create", memory_mib=512, timeout_s=600))[
            "sandbox_id"
        ]
        try:
            served = await call(
                client, "sandbox_exec", sandbox_id=sandbox_id, command=SERVE, timeout_s=180
            )
            assert served["exit_code"] == 0, served
            url = await call(client, "sandbox_url", sandbox_id=sandbox_id, port=PORT)
            assert url["origin"] == f"https://{PORT}-{sandbox_id}.isorun.localhost:{up.edge_port}"
            tls = ssl.create_default_context(cafile=up.data_dir / "edge" / "edge-cert.pem")
            async with httpx.AsyncClient(
                verify=tls, trust_env=False, timeout=FETCH_TIMEOUT_S
            ) as http:
                answer = await http.get(url["url"])
            assert answer.status_code == 200, answer.text
            assert "Directory listing for /" in answer.text and "from-mcp.txt" in answer.text
        finally:
            await client.call_tool("sandbox_delete", {"sandbox_id": sandbox_id})
