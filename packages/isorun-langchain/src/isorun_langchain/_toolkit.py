"""`IsorunToolkit`: plain LangChain tools over one isorun sandbox, for agents without deepagents.

```
sandbox_exec(command, timeout_s?)   → output        artifact {exit_code, truncated}
sandbox_read_file(path)             → text
sandbox_write_file(path, content)   → "Wrote N bytes to PATH."
sandbox_list_dir(path)              → one entry a line, folders ending in "/"
                                                    artifact [FileStat as a dict, ...]
```

A guest-side failure (non-zero exit, timeout, missing file, refused path) raises
`ToolException`, and every tool has `handle_tool_error=True`, so the model gets the message as a
`ToolMessage` with `status="error"` and the agent loop goes on. Failures of isorun itself (the
sandbox is gone, the API unreachable) propagate as the SDK's errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from isorun import FileError, InvalidRequest, NotFound, Sandbox
from langchain_core.tools import BaseTool, BaseToolkit, StructuredTool, ToolException
from pydantic import ConfigDict

from isorun_langchain._output import combined_output, exit_status

DEFAULT_TIMEOUT_S = 5 * 60
"""Default limit of `sandbox_exec`; a tool call blocks the agent loop, so it is shorter than
deepagents' 30 minutes."""

_REFUSED = (FileError, InvalidRequest, NotFound)


class IsorunToolkit(BaseToolkit):
    """LangChain tools that run commands and move files in one isorun sandbox.

    The sandbox's lifetime stays the caller's.

    Args:
        sandbox: A running isorun sandbox.
        timeout_s: Default limit of a `sandbox_exec` call, in seconds.

    Example:
        >>> with Sandbox("python") as sb:  # doctest: +SKIP
        ...     agent = create_agent(model, tools=IsorunToolkit(sandbox=sb).get_tools())
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sandbox: Sandbox
    timeout_s: int = DEFAULT_TIMEOUT_S

    def get_tools(self) -> list[BaseTool]:
        """Return the four tools (see the module docstring), bound to this sandbox."""
        sandbox, default_timeout_s = self.sandbox, self.timeout_s

        def sandbox_exec(command: str, timeout_s: int | None = None) -> tuple[str, dict[str, Any]]:
            """Run a shell command in the sandbox and return its stdout and stderr.

            Args:
                command: A /bin/sh command line.
                timeout_s: Seconds before the command is killed; the toolkit's default if unset.
            """
            limit_s = timeout_s or default_timeout_s
            result = sandbox.exec(command, timeout_s=limit_s)
            output = combined_output(result, timeout_s=limit_s)
            code = exit_status(result)
            if code != 0:
                raise ToolException(f"Command failed with exit code {code}.\n{output}".rstrip())
            return output, {"exit_code": code, "truncated": result.truncated}

        def sandbox_read_file(path: str) -> str:
            """Read a text file from the sandbox.

            Args:
                path: Absolute path of the file.
            """
            try:
                content = sandbox.files.read(path)
            except _REFUSED as error:
                raise ToolException(f"Cannot read {path}: {error.message}") from error
            return content.decode("utf-8", "replace")

        def sandbox_write_file(path: str, content: str) -> str:
            """Write a text file in the sandbox, replacing it and creating missing folders.

            Args:
                path: Absolute path of the file.
                content: The whole new content.
            """
            try:
                written = sandbox.files.write(path, content, parents=True)
            except _REFUSED as error:
                raise ToolException(f"Cannot write {path}: {error.message}") from error
            return f"Wrote {written.size_bytes} bytes to {written.path}."

        def sandbox_list_dir(path: str) -> tuple[str, list[dict[str, Any]]]:
            """List a folder of the sandbox, one entry a line; folders end in "/".

            Args:
                path: Absolute path of the folder.
            """
            try:
                entries = sandbox.files.list(path)
            except _REFUSED as error:
                raise ToolException(f"Cannot list {path}: {error.message}") from error
            lines = [entry.name + ("/" if entry.is_dir else "") for entry in entries]
            return "\n".join(sorted(lines)), [entry.model_dump() for entry in entries]

        return [
            _tool(sandbox_exec, "content_and_artifact"),
            _tool(sandbox_read_file, "content"),
            _tool(sandbox_write_file, "content"),
            _tool(sandbox_list_dir, "content_and_artifact"),
        ]


def _tool(
    func: Callable[..., Any], response_format: Literal["content", "content_and_artifact"]
) -> BaseTool:
    # The docstring's Args section becomes the model-visible argument descriptions.
    return StructuredTool.from_function(
        func, parse_docstring=True, response_format=response_format, handle_tool_error=True
    )
