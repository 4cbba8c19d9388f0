"""The `agent_toolset_20260401` tools of Claude Managed Agents, run in an isorun sandbox.

Same names and input schemas as anthropic's host-side reference
(`anthropic.lib.tools.agent_toolset.beta_agent_toolset_20260401`), so a self-hosted
environment worker serves a session from a VM by changing its `tools=`:

```
bash   {command?, restart?, timeout_ms?}        bash -c in workdir (a fresh shell per call)
read   {file_path, view_range?}                 text; [start, end] 1-based, end <= 0: to EOF
write  {file_path, content}                     parents created
edit   {file_path, old_string, new_string, replace_all?}   old_string unique unless replace_all
glob   {pattern, path?}                         bash globstar, newest first, 200 at most
grep   {pattern, path?}                         grep -rnE, 100 KiB of matches at most
```

Relative paths resolve against `workdir`. Every guest-side failure is a `ToolError`, which the
session tool runner posts as an `is_error` tool result. The reference confines paths to its
workdir because it runs on the host; here the VM is the boundary, so absolute paths are
allowed.
"""

from __future__ import annotations

import posixpath
from typing import Any

from anthropic.lib.tools import BetaAsyncFunctionTool, ToolError, beta_async_tool
from anthropic.types.beta import (
    BetaManagedAgentsAgentToolset20260401BashInput,
    BetaManagedAgentsAgentToolset20260401EditInput,
    BetaManagedAgentsAgentToolset20260401GlobInput,
    BetaManagedAgentsAgentToolset20260401GrepInput,
    BetaManagedAgentsAgentToolset20260401ReadInput,
    BetaManagedAgentsAgentToolset20260401WriteInput,
)
from isorun import AsyncSandbox

from isorun_claude._output import exec_output, guest_file_errors

DEFAULT_WORKDIR = "/workspace"
BASH_DEFAULT_TIMEOUT_S = 120.0
GLOB_RESULT_LIMIT = 200
GREP_OUTPUT_LIMIT_BYTES = 100 * 1024
SEARCH_TIMEOUT_S = 60.0

# The pattern arrives in $PATTERN and is expanded unquoted, so bash globs it without ever
# parsing it as code; IFS=newline keeps patterns with spaces whole.
_GLOB_SCRIPT = f"""shopt -s globstar nullglob
IFS=$'\\n'
cd -- "$DIR" || exit 2
matches=( $PATTERN )
(( ${{#matches[@]}} )) || exit 1
ls -1td -- "${{matches[@]}}" | head -n {GLOB_RESULT_LIMIT}"""
_GREP_SCRIPT = f'grep -rnE -- "$PATTERN" "$DIR" | head -c {GREP_OUTPUT_LIMIT_BYTES}'
# grep's status, not head's: 1 means no match, 2 a bad pattern or path.
_GREP_STATUS = "; exit ${PIPESTATUS[0]}"


def isorun_agent_toolset(
    sandbox: AsyncSandbox, *, workdir: str = DEFAULT_WORKDIR
) -> list[BetaAsyncFunctionTool[Any]]:
    """Return `bash`, `read`, `write`, `edit`, `glob` and `grep` acting on `sandbox`.

    Args:
        sandbox: The session's sandbox; the caller owns it (and destroys it).
        workdir: Where relative paths resolve and commands run; it must exist in the guest.

    Example:
        ```python
        EnvironmentWorker(client, tools=lambda ctx: isorun_agent_toolset(sb))
        ```
    """

    def resolve(path: str) -> str:
        return posixpath.normpath(posixpath.join(workdir, path))

    async def search(script: str, pattern: str, path: str | None) -> str | None:
        """Run a search script; None when it found nothing (exit 1)."""
        env = {"PATTERN": pattern, "DIR": resolve(path or ".")}
        result = await sandbox.exec(["bash", "-c", script], env=env, timeout_s=SEARCH_TIMEOUT_S)
        if result.exit_code == 1 and not result.timed_out:
            return None
        return exec_output(result, SEARCH_TIMEOUT_S)

    @beta_async_tool(name="bash", input_schema=BetaManagedAgentsAgentToolset20260401BashInput)
    async def bash(
        command: str | None = None, restart: bool | None = None, timeout_ms: int | None = None
    ) -> str:
        """Run a command in bash in the working directory."""
        if restart:
            # Each command is a fresh shell already: there is no session to restart.
            return "bash session restarted"
        if not command:
            raise ToolError("bash: command is required")
        timeout_s = timeout_ms / 1000 if timeout_ms else BASH_DEFAULT_TIMEOUT_S
        result = await sandbox.exec(["bash", "-c", command], cwd=workdir, timeout_s=timeout_s)
        return exec_output(result, timeout_s)

    @beta_async_tool(name="read", input_schema=BetaManagedAgentsAgentToolset20260401ReadInput)
    async def read(file_path: str, view_range: list[int] | None = None) -> str:
        """Read a file (relative to the working directory)."""
        if view_range and len(view_range) != 2:
            raise ToolError("read: view_range must be [start_line, end_line]")
        with guest_file_errors(file_path):
            text = await sandbox.files.read_text(resolve(file_path), errors="replace")
        if not view_range:
            return text
        start, end = view_range
        lines = text.split("\n")
        return "\n".join(lines[max(0, start - 1) : end if end > 0 else len(lines)])

    @beta_async_tool(name="write", input_schema=BetaManagedAgentsAgentToolset20260401WriteInput)
    async def write(file_path: str, content: str) -> str:
        """Write a file, replacing it and creating parent directories."""
        with guest_file_errors(file_path):
            await sandbox.files.write(resolve(file_path), content, parents=True)
        return f"wrote {len(content)} bytes to {file_path}"

    @beta_async_tool(name="edit", input_schema=BetaManagedAgentsAgentToolset20260401EditInput)
    async def edit(
        file_path: str, old_string: str, new_string: str, replace_all: bool | None = None
    ) -> str:
        """Replace text in a file by exact string match."""
        target = resolve(file_path)
        with guest_file_errors(file_path):
            text = await sandbox.files.read_text(target)
            count = text.count(old_string)
            if count == 0:
                raise ToolError(f"edit: old_string not found in {file_path}")
            if count > 1 and not replace_all:
                raise ToolError(
                    f"edit: old_string appears {count} times in {file_path} (must be unique)"
                )
            await sandbox.files.write(
                target, text.replace(old_string, new_string, -1 if replace_all else 1)
            )
        return f"edited {file_path} ({count if replace_all else 1} replacement(s))"

    @beta_async_tool(name="glob", input_schema=BetaManagedAgentsAgentToolset20260401GlobInput)
    async def glob(pattern: str, path: str | None = None) -> str:
        """List files matching a glob pattern, newest first."""
        found = await search(_GLOB_SCRIPT, pattern, path)
        return "no matches" if found is None else found

    @beta_async_tool(name="grep", input_schema=BetaManagedAgentsAgentToolset20260401GrepInput)
    async def grep(pattern: str, path: str | None = None) -> str:
        """Search file contents for a regular expression."""
        found = await search(_GREP_SCRIPT + _GREP_STATUS, pattern, path)
        return "no matches" if found is None else found

    return [bash, read, write, edit, glob, grep]
