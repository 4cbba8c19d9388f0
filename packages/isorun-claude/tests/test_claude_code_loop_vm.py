"""End to end: the Claude Agent SDK's real agent loop (the bundled Claude Code CLI) with the
isorun SDK MCP server, a scripted Messages API on 127.0.0.1 as the model, and a real VM behind
`isorun up`.

```
query() --stream-json--> claude CLI --POST /v1/messages (SSE)--> ScriptedModel (loopback)
                           | mcp__vm__* tool calls, control_request mcp_message
                           v
             isorun_mcp_server (in this process) --isorun API--> VM
```
The CLI runs offline: a temp HOME and config dir, non-essential traffic off, and every proxy
variable pointed at the fake, which records (and refuses) anything but the Messages API.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from claude_agent_sdk import ClaudeAgentOptions, ResultMessage, query
from claude_messages_api import ScriptedModel, serve_on_loopback, text, tool_use
from isorun import AsyncSandbox, Sandbox
from isorun_claude.agent_sdk import allowed_tools, isorun_mcp_server

from tests.framework.isorun_up import Up

pytestmark = pytest.mark.vm

LOOP_TIMEOUT_S = 120.0
NOTE = "hello from claude code\n"


def offline_env(api_url: str, home: Path) -> dict[str, str]:
    """The CLI's environment: the fake as its API and its proxy, nothing read from ~."""
    proxies = {name: api_url for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")}
    return {
        "ANTHROPIC_BASE_URL": api_url,
        "ANTHROPIC_API_KEY": "sk-test",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        **proxies,
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }


def claude_children() -> list[int]:
    """Pids of this process's children that run the Claude Code CLI."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            comm, rest = stat.read_text().rsplit(")", 1)
            if int(rest.split()[1]) == os.getpid() and comm.endswith("(claude"):
                found.append(int(stat.parent.name))
    return found


def result_text(block: dict[str, Any]) -> str:
    """A `tool_result`'s text, less the `<system-reminder>` Claude Code appends to it."""
    content = block["content"]
    joined = content if isinstance(content, str) else "".join(part["text"] for part in content)
    return joined.split("\n<system-reminder>", 1)[0]


async def test_claude_code_loop_acts_on_the_vm(up: Up, vm: Sandbox, tmp_path: Path) -> None:
    model = ScriptedModel(
        [
            [tool_use("t1", "mcp__vm__write_file", {"path": "/tmp/cc/note.txt", "content": NOTE})],
            [tool_use("t2", "mcp__vm__exec", {"command": "tr a-z A-Z < note.txt | tee loud.txt"})],
            [tool_use("t3", "mcp__vm__exec", {"command": "cat /tmp/cc/missing.txt"})],
            [text("done")],
        ]
    )
    stderr: list[str] = []
    messages: list[Any] = []
    sb = await AsyncSandbox.connect(vm.id, api_url=up.url, api_key=up.key)
    try:
        with serve_on_loopback(model) as api:
            options = ClaudeAgentOptions(
                mcp_servers={"vm": isorun_mcp_server(sb, name="vm", cwd="/tmp/cc")},
                allowed_tools=allowed_tools("vm"),
                tools=[],
                setting_sources=[],
                model="claude-sonnet-4-5",
                cwd=tmp_path,
                env=offline_env(api.url, tmp_path / "home"),
                stderr=stderr.append,
            )
            # anyio's deadline, not asyncio's: the transport's close is shielded against it,
            # so the CLI is reaped even when the loop times out.
            with anyio.fail_after(LOOP_TIMEOUT_S):
                async with contextlib.aclosing(query(prompt="go", options=options)) as stream:
                    messages = [message async for message in stream]
    finally:
        await sb.aclose()

    assert not claude_children(), "the CLI outlived the query"
    result = messages[-1]
    assert isinstance(result, ResultMessage), f"{messages!r}\n{''.join(stderr)}"
    assert (result.subtype, result.is_error, result.result) == ("success", False, "done")
    assert api.strays == []  # nothing but the Messages API: no telemetry, no proxy CONNECT

    assert len(model.requests) == 4 and all(body["stream"] for body in model.requests)
    assert [tool["name"] for tool in model.requests[0]["tools"]] == allowed_tools("vm")

    assert vm.files.read_text("/tmp/cc/note.txt") == NOTE
    assert vm.files.read_text("/tmp/cc/loud.txt") == NOTE.upper()
    wrote, ran, failed = model.tool_results()
    assert [block["tool_use_id"] for block in (wrote, ran, failed)] == ["t1", "t2", "t3"]
    assert not wrote.get("is_error")
    assert result_text(wrote) == f"wrote {len(NOTE)} bytes to /tmp/cc/note.txt"
    assert not ran.get("is_error") and result_text(ran) == NOTE.upper()
    assert failed["is_error"] is True
    assert "No such file" in result_text(failed) and "[exit code 1]" in result_text(failed)
