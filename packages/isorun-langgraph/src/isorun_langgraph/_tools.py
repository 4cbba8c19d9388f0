"""The sandbox tools: LangChain `StructuredTool`s that run in the tool call's thread sandbox.

```
sandbox_exec(command, timeout_s?)   /bin/sh -c in the VM -> stdout (+ stderr)
sandbox_read_file(path)             the file's text
sandbox_write_file(path, content)   create or replace, parents created
```

Each tool takes a hidden `config: RunnableConfig` parameter, which LangChain fills with the
running config and leaves out of the model's schema; `ThreadSandboxes.get(config)` turns its
`thread_id` into a VM. With `with_state=True` (`TimeTravelSandboxes`) each also takes the graph
state, injected by `ToolNode` and equally hidden, so that the VM matches the checkpoint.

Guest failures (a non-zero exit, a timeout, a missing file, a refused write) raise
`ToolException`, and `handle_tool_error=True` makes that an error `ToolMessage`
(`status="error"`) for the model to read, with `ToolNode` or without. Anything else (the VM is
gone, the API is unreachable, no thread_id) propagates: the model cannot fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

from isorun import FileError, NotFound, SandboxNotFound
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langgraph.prebuilt import InjectedState
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from isorun import Sandbox


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


class _WithState(BaseModel):
    state: Annotated[dict[str, Any], InjectedState]


class ExecArgsWithState(ExecArgs, _WithState):
    pass


class ReadFileArgsWithState(ReadFileArgs, _WithState):
    pass


class WriteFileArgsWithState(WriteFileArgs, _WithState):
    pass


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


Resolve = Callable[[RunnableConfig, "dict[str, Any] | None"], "Sandbox"]
"""The tool call's sandbox, from its config and (with `with_state`) the graph state."""


def sandbox_tools(vm: Resolve, *, with_state: bool = False) -> list[BaseTool]:
    """Return the exec / read / write tools running in `vm(...)` (see the module docstring)."""

    def sandbox_exec(
        command: str,
        config: RunnableConfig,
        timeout_s: float | None = None,
        state: dict[str, Any] | None = None,
    ) -> str:
        result = vm(config, state).exec(command, timeout_s=timeout_s)
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

    def sandbox_read_file(
        path: str, config: RunnableConfig, state: dict[str, Any] | None = None
    ) -> str:
        with _guest_errors(path):
            return vm(config, state).files.read_text(path, errors="replace")

    def sandbox_write_file(
        path: str, content: str, config: RunnableConfig, state: dict[str, Any] | None = None
    ) -> str:
        with _guest_errors(path):
            written = vm(config, state).files.write(path, content, parents=True)
        return f"wrote {written.path} ({written.size_bytes} bytes)"

    return [
        _tool(
            sandbox_exec,
            "sandbox_exec",
            "Run a shell command in the sandbox.",
            ExecArgsWithState if with_state else ExecArgs,
        ),
        _tool(
            sandbox_read_file,
            "sandbox_read_file",
            "Read a text file.",
            ReadFileArgsWithState if with_state else ReadFileArgs,
        ),
        _tool(
            sandbox_write_file,
            "sandbox_write_file",
            "Create or replace a text file.",
            WriteFileArgsWithState if with_state else WriteFileArgs,
        ),
    ]
