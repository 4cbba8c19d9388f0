"""Claude Agent SDK tools on an isorun sandbox, as an in-process (SDK) MCP server.

Needs the `agent-sdk` extra (`pip install 'isorun-claude[agent-sdk]'`): claude-agent-sdk
bundles the Claude Code CLI, which runs the agent loop and reaches this server in-process.

```
ClaudeAgentOptions(mcp_servers={"isorun": isorun_mcp_server(sb)},
                   allowed_tools=allowed_tools(), tools=[])   # tools=[]: no host-side built-ins
  mcp__isorun__exec        {command, timeout_s?}   bash -c in the VM -> stdout+stderr
  mcp__isorun__read_file   {path}                  the file's text
  mcp__isorun__write_file  {path, content}         parents created
  guest failure            -> {"content": [...], "is_error": true}, the agent goes on
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from anthropic.lib.tools import ToolError
from claude_agent_sdk import McpSdkServerConfig, SdkMcpTool, create_sdk_mcp_server
from isorun import AsyncSandbox

from isorun_claude._output import exec_output, guest_file_errors

TOOL_NAMES = ("exec", "read_file", "write_file")
DEFAULT_TIMEOUT_S = 120.0

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def allowed_tools(server_name: str = "isorun") -> list[str]:
    """Return the names Claude Code gives this server's tools, for `allowed_tools=`."""
    return [f"mcp__{server_name}__{name}" for name in TOOL_NAMES]


def _schema(**properties: str) -> dict[str, Any]:
    """A JSON schema of required properties ("number?" marks an optional one)."""
    return {
        "type": "object",
        "properties": {name: {"type": kind.rstrip("?")} for name, kind in properties.items()},
        "required": [name for name, kind in properties.items() if not kind.endswith("?")],
    }


def _answering(work: Callable[[dict[str, Any]], Awaitable[str]]) -> Handler:
    """Wrap `work` into an SDK tool handler: its text, or its `ToolError` as `is_error`."""

    async def handler(args: dict[str, Any]) -> dict[str, Any]:
        try:
            text = await work(args)
        except ToolError as exc:
            return {"content": [{"type": "text", "text": str(exc)}], "is_error": True}
        return {"content": [{"type": "text", "text": text}]}

    return handler


def isorun_mcp_server(
    sandbox: AsyncSandbox,
    *,
    name: str = "isorun",
    cwd: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> McpSdkServerConfig:
    """Build the SDK MCP server whose tools act on `sandbox`.

    Args:
        sandbox: The sandbox the tools act on; the caller owns it (and destroys it).
        name: The server's name: the key in `mcp_servers`, and the middle of the tool names.
        cwd: Working directory of `exec`; the guest's default when None.
        timeout_s: Default limit of one `exec` (the model may pass its own `timeout_s`).

    Returns:
        The config to put in `ClaudeAgentOptions(mcp_servers={name: ...})`.

    Example:
        ```python
        async with AsyncSandbox.create("python") as sb:
            options = ClaudeAgentOptions(
                mcp_servers={"isorun": isorun_mcp_server(sb)},
                allowed_tools=allowed_tools(),
                tools=[],
            )
            async for message in query(prompt="Run uname -a", options=options):
                print(message)
        ```
    """

    async def exec_(args: dict[str, Any]) -> str:
        limit = float(args.get("timeout_s", timeout_s))
        result = await sandbox.exec(["bash", "-c", args["command"]], cwd=cwd, timeout_s=limit)
        return exec_output(result, limit)

    async def read_file(args: dict[str, Any]) -> str:
        with guest_file_errors(args["path"]):
            return await sandbox.files.read_text(args["path"], errors="replace")

    async def write_file(args: dict[str, Any]) -> str:
        with guest_file_errors(args["path"]):
            written = await sandbox.files.write(args["path"], args["content"], parents=True)
        return f"wrote {written.size_bytes} bytes to {args['path']}"

    tools = [
        SdkMcpTool(
            name="exec",
            description="Run a shell command (bash -c) in the sandbox; returns stdout and stderr.",
            input_schema=_schema(command="string", timeout_s="number?"),
            handler=_answering(exec_),
        ),
        SdkMcpTool(
            name="read_file",
            description="Return the text of a file in the sandbox (absolute path).",
            input_schema=_schema(path="string"),
            handler=_answering(read_file),
        ),
        SdkMcpTool(
            name="write_file",
            description="Write text to a file in the sandbox, creating parent directories.",
            input_schema=_schema(path="string", content="string"),
            handler=_answering(write_file),
        ),
    ]
    return create_sdk_mcp_server(name, tools=tools)
