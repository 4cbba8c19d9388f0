"""`@beta_tool` function tools on an isorun sandbox, for models or prompts that want plain
custom tools rather than the Anthropic-defined bash / text editor schemas.

```
sandbox_exec(command, timeout_s=120)    bash -c in the sandbox -> stdout+stderr | ToolError
sandbox_read_file(path)                 the file's text         | ToolError
sandbox_write_file(path, content)       parents created         | ToolError
```
"""

from __future__ import annotations

from typing import Any

from anthropic.lib.tools import BetaFunctionTool, beta_tool
from isorun import Sandbox

from isorun_claude._output import exec_output, guest_file_errors


def sandbox_tools(sandbox: Sandbox) -> list[BetaFunctionTool[Any]]:
    """Return `sandbox_exec`, `sandbox_read_file` and `sandbox_write_file` on `sandbox`.

    Args:
        sandbox: The sandbox the tools act on; the caller owns it.

    Example:
        ```python
        runner = client.beta.messages.tool_runner(
            model="claude-sonnet-4-5", max_tokens=1024, tools=sandbox_tools(sb), messages=[...]
        )
        ```
    """

    @beta_tool
    def sandbox_exec(command: str, timeout_s: float = 120.0) -> str:
        """Run a shell command (bash -c) in the sandbox and return its stdout and stderr.

        Args:
            command: The command line.
            timeout_s: Kill the command after this many seconds.
        """
        result = sandbox.exec(["bash", "-c", command], timeout_s=timeout_s)
        return exec_output(result, timeout_s)

    @beta_tool
    def sandbox_read_file(path: str) -> str:
        """Return the text of a file in the sandbox.

        Args:
            path: Absolute path of the file.
        """
        with guest_file_errors(path):
            return sandbox.files.read_text(path, errors="replace")

    @beta_tool
    def sandbox_write_file(path: str, content: str) -> str:
        """Write text to a file in the sandbox, replacing it and creating parent directories.

        Args:
            path: Absolute path of the file.
            content: The new content.
        """
        with guest_file_errors(path):
            written = sandbox.files.write(path, content, parents=True)
        return f"wrote {written.size_bytes} bytes to {path}"

    return [sandbox_exec, sandbox_read_file, sandbox_write_file]
