"""The sandbox tools: LangChain `StructuredTool`s that run in the tool call's thread sandbox.

```
sandbox_exec(command, timeout_s?)   /bin/sh -c in the VM -> stdout (+ stderr)
sandbox_read_file(path)             the file's text
sandbox_write_file(path, content)   create or replace, parents created
```

Each tool takes a hidden `config: RunnableConfig` parameter, which LangChain fills with the
running config and leaves out of the model's schema; `ThreadSandboxes.get(config)` turns its
`thread_id` into a VM. Guest failures (a non-zero exit, a timeout, a missing file, a refused
write) raise `ToolException`, and `handle_tool_error=True` makes that an error `ToolMessage`
(`status="error"`) for the model to read, with `ToolNode` or without. Anything else (the VM is
gone, the API is unreachable, no thread_id) propagates: the model cannot fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from isorun import FileError, NotFound, SandboxNotFound
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from isorun_langgraph._sandboxes import ThreadSandboxes


class ExecArgs(BaseModel):
    command: str = Field(description="Shell command, run with /bin/sh -c in the sandbox.")
    timeout_s: float | None = Field(
        default=None, description="Kill the command after this many seconds."
    )


class ReadFileArgs(BaseModel):
    path: str = Field(description="Absolute path of the file in the sandbox.")


class WriteFileArgs(BaseModel):
    path: str = Field(description="Absolute path of the file in the sandbox.")
    content: str = Field(description="The whole text of the file.")


@contextmanager
def _guest_errors(path: str) -> Iterator[None]:
    """Turn the guest's refusal of a file operation into a `ToolException`."""
    try:
        yield
    except SandboxNotFound:
        raise
    except (FileError, NotFound) as error:
        raise ToolException(f"{path}: {error}") from error


def _tool(func: Callable[..., str], name: str, description: str, args: type[BaseModel]) -> BaseTool:
    return StructuredTool.from_function(
        func=func,
        name=name,
        description=description,
        args_schema=args,
        handle_tool_error=True,
    )


def sandbox_tools(sandboxes: ThreadSandboxes) -> list[BaseTool]:
    """Return the exec / read / write tools bound to `sandboxes` (see the module docstring)."""

    def sandbox_exec(command: str, config: RunnableConfig, timeout_s: float | None = None) -> str:
        result = sandboxes.get(config).exec(command, timeout_s=timeout_s)
        output = result.stdout + result.stderr
        if result.timed_out:
            raise ToolException(f"timed out after {timeout_s} s\n{output}")
        if result.exit_code != 0:
            status = (
                f"exit code {result.exit_code}"
                if result.signal is None
                else f"killed by signal {result.signal}"
            )
            raise ToolException(f"{status}\n{output}")
        return output

    def sandbox_read_file(path: str, config: RunnableConfig) -> str:
        with _guest_errors(path):
            return sandboxes.get(config).files.read_text(path, errors="replace")

    def sandbox_write_file(path: str, content: str, config: RunnableConfig) -> str:
        with _guest_errors(path):
            written = sandboxes.get(config).files.write(path, content, parents=True)
        return f"wrote {written.path} ({written.size_bytes} bytes)"

    return [
        _tool(sandbox_exec, "sandbox_exec", "Run a shell command in the sandbox.", ExecArgs),
        _tool(sandbox_read_file, "sandbox_read_file", "Read a text file.", ReadFileArgs),
        _tool(
            sandbox_write_file,
            "sandbox_write_file",
            "Create or replace a text file.",
            WriteFileArgs,
        ),
    ]
