"""The full profile's shell tools: long-lived shells on a terminal, typed into and read.

```
shell_open(sandbox_id, command?, cols?, rows?, cwd?)     start one; its first output (a prompt)
shell_write(sandbox_id, shell_id, input, wait_ms=1000)   type; what it printed within wait_ms
shell_read(sandbox_id, shell_id, wait_ms=1000)           what it printed since the last read
shell_signal(sandbox_id, shell_id, signal)               INT, TERM, KILL, ... to the job in front
shell_close(sandbox_id, shell_id) · shell_list(sandbox_id)
```
A shell outlives the tool call and the MCP session: it runs until it exits or `shell_close`
hangs it up. The server keeps one attach per shell (`isorun_mcp._terminals`) and hands out each
byte of output once; a shell it has not attached to before (after a restart, or opened by
another session) starts with its scrollback. shell_write makes this server the shell's writer
(another client attached with `write`, a person's `isorun shell --attach`, becomes a reader);
shell_read only reads. Errors: an unknown shell id or a shell that has
exited is a tool error saying so; the rest follow `isorun_mcp._sandboxes`.
"""

import signal as signals
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Literal

from isorun import AsyncSandbox, NotFound, SandboxNotFound, TerminalClosed
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from isorun_mcp._core import SandboxId, SessionContext, sandboxes
from isorun_mcp._results import Shell, ShellClosed, ShellList, ShellOutput, ShellSignalled
from isorun_mcp._sandboxes import Sandboxes
from isorun_mcp._terminals import Collected, ShellTerminal

MAX_WAIT_MS = 60_000
DEFAULT_OUTPUT_BYTES = 16_384
MAX_OUTPUT_BYTES = 262_144
OPEN_SETTLE_S = 0.3
"""shell_open returns once its first output has come and nothing more for this long."""
CLOSE_WAIT_S = 3.0
"""How long shell_close waits to see the shell's end (SIGHUP, SIGKILL after 2 s)."""

ShellId = Annotated[str, Field(description="The id shell_open returned (sh-...).")]
WaitMs = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_WAIT_MS,
        description="Milliseconds to collect output for; it returns sooner if the shell exits "
        "or max_output_bytes are waiting. Raise it for a command that takes a while.",
    ),
]
MaxOutputBytes = Annotated[
    int,
    Field(
        ge=256,
        le=MAX_OUTPUT_BYTES,
        description="At most this much output (UTF-8 bytes) is returned; past it the middle is "
        "left out, with a note saying how much.",
    ),
]


@contextmanager
def shell_errors(sandbox_id: str, shell_id: str) -> Iterator[None]:
    """An unknown shell, or one that has ended, as a `ToolError` naming it; other errors go on
    to `tool_errors`.

    Raises:
        ToolError: For `NotFound` (not a sandbox's) and `TerminalClosed`.
    """
    try:
        yield
    except SandboxNotFound:
        raise
    except NotFound as exc:
        raise ToolError(
            f"shell {shell_id} not found in sandbox {sandbox_id}: it was closed or ended more "
            "than 5 minutes ago, or the id is wrong; shell_list lists the sandbox's shells"
        ) from exc
    except TerminalClosed as exc:
        raise ToolError(
            f"shell {shell_id} in sandbox {sandbox_id} has exited; shell_read gives its last "
            "output and exit code, shell_open starts a new one"
        ) from exc


@asynccontextmanager
async def shell_call(
    session: Sandboxes, sandbox_id: str, shell_id: str
) -> AsyncIterator[AsyncSandbox]:
    """The sandbox, for one call on one of its shells, errors turned into `ToolError`s."""
    async with session.use(sandbox_id) as sandbox:
        with shell_errors(sandbox_id, shell_id):
            yield sandbox


def output_of(terminal: ShellTerminal, collected: Collected) -> ShellOutput:
    ended = collected.exit
    return ShellOutput(
        shell_id=terminal.shell_id,
        output=collected.output,
        truncated=collected.truncated,
        exited=ended is not None,
        exit_code=None if ended is None else ended.exit_code,
        signal=None if ended is None else ended.signal,
    )


def signal_number(name: str) -> int:
    """`"INT"`, `"SIGINT"` or `"2"` as 2.

    Raises:
        ToolError: No such signal.
    """
    text = name.strip().upper()
    if text.isdigit():
        return int(text)
    try:
        return int(signals.Signals[text if text.startswith("SIG") else f"SIG{text}"])
    except KeyError:
        raise ToolError(
            f"unknown signal {name!r}: give a name such as INT, TERM, KILL or HUP, or a number"
        ) from None


async def shell_open(  # noqa: PLR0917 - FastMCP passes tool arguments by name
    ctx: SessionContext,
    sandbox_id: SandboxId,
    command: Annotated[
        str | None,
        Field(
            description="A command line to run on the terminal (under /bin/sh -c), e.g. "
            '"python3" for a REPL; by default a login bash (else /bin/sh).'
        ),
    ] = None,
    cols: Annotated[int, Field(ge=1, le=1000, description="Terminal width.")] = 200,
    rows: Annotated[int, Field(ge=1, le=1000, description="Terminal height.")] = 50,
    cwd: Annotated[str | None, Field(description="Working directory.")] = None,
    wait_ms: Annotated[
        int,
        Field(
            ge=0,
            le=MAX_WAIT_MS,
            description="Milliseconds to wait for the first output (the prompt); it returns "
            "once that has come and settled.",
        ),
    ] = 2000,
) -> ShellOutput:
    """Start a persistent shell on a terminal in the sandbox and return its shell_id with its
    first output (usually the prompt). It keeps running, its state (directory, variables,
    background jobs, a REPL) kept between calls, until it exits or shell_close; type into it
    with shell_write and follow it with shell_read. Use it for interactive programs and
    long-running commands; sandbox_exec is simpler for one-off commands.

    Output is the terminal stream decoded as UTF-8: the echo of typed input and \\r\\n line
    ends are in it. The shell runs with TERM=dumb, so most programs leave out colors and
    cursor moves; a full-screen program may still send escape sequences."""
    session = sandboxes(ctx)
    async with session.use(sandbox_id) as sandbox:
        # A model reads the stream as text: a dumb terminal spares it colors, bracketed paste
        # and cursor control from bash, ls, git and friends.
        info = await sandbox.shells.create(
            command, cols=cols, rows=rows, cwd=cwd, env={"TERM": "dumb"}
        )
        with shell_errors(sandbox_id, info.id):
            terminal = await session.terminals.get(sandbox, info.id, write=True)
    collected = await terminal.collect(wait_ms / 1000, DEFAULT_OUTPUT_BYTES, settle_s=OPEN_SETTLE_S)
    return output_of(terminal, collected)


async def shell_write(  # noqa: PLR0917 - FastMCP passes tool arguments by name
    ctx: SessionContext,
    sandbox_id: SandboxId,
    shell_id: ShellId,
    input: Annotated[
        str,
        Field(
            description='Text to type, as keys: "\\n" submits a line (e.g. "ls -la\\n"), '
            '"\\x03" is Ctrl-C, "\\x04" Ctrl-D (end of input), "\\x1a" Ctrl-Z, "\\t" Tab, '
            '"\\x1b[A" the up arrow.'
        ),
    ],
    wait_ms: WaitMs = 1000,
    max_output_bytes: MaxOutputBytes = DEFAULT_OUTPUT_BYTES,
) -> ShellOutput:
    """Type input into a shell that shell_open started, then return what its terminal printed
    within wait_ms (with any output not read before). A command still running after wait_ms
    goes on: follow it with shell_read, stop it with "\\x03" (Ctrl-C) or shell_signal. The
    output is raw terminal output, as shell_open's: the echo of the input comes first."""
    session = sandboxes(ctx)
    async with shell_call(session, sandbox_id, shell_id) as sandbox:
        terminal = await session.terminals.get(sandbox, shell_id)
        await terminal.send(input)
    collected = await terminal.collect(wait_ms / 1000, max_output_bytes)
    return output_of(terminal, collected)


async def shell_read(
    ctx: SessionContext,
    sandbox_id: SandboxId,
    shell_id: ShellId,
    wait_ms: WaitMs = 1000,
    max_output_bytes: MaxOutputBytes = DEFAULT_OUTPUT_BYTES,
) -> ShellOutput:
    """Return what a shell printed since the last shell_open, shell_write or shell_read of it,
    waiting wait_ms for more; exited and exit_code tell whether the shell has ended. The first
    read of a shell this server has not attached to before returns its scrollback."""
    session = sandboxes(ctx)
    async with shell_call(session, sandbox_id, shell_id) as sandbox:
        terminal = await session.terminals.get(sandbox, shell_id)
    collected = await terminal.collect(wait_ms / 1000, max_output_bytes)
    return output_of(terminal, collected)


async def shell_signal(
    ctx: SessionContext,
    sandbox_id: SandboxId,
    shell_id: ShellId,
    signal: Annotated[
        str, Field(description='A signal name ("INT", "TERM", "KILL", "HUP") or its number.')
    ],
    target: Annotated[
        Literal["foreground", "shell"],
        Field(
            description='"foreground": the job in front, as a key would; "shell": the shell itself.'
        ),
    ] = "foreground",
) -> ShellSignalled:
    """Send a signal to the command running in front in a shell (or to the shell itself)."""
    number = signal_number(signal)
    async with shell_call(sandboxes(ctx), sandbox_id, shell_id) as sandbox:
        await sandbox.shells.signal(shell_id, number, target)
    return ShellSignalled(shell_id=shell_id, signal=number, target=target)


async def shell_close(ctx: SessionContext, sandbox_id: SandboxId, shell_id: ShellId) -> ShellClosed:
    """Hang up a shell (SIGHUP, then SIGKILL after 2 s) and everything running in it."""
    session = sandboxes(ctx)
    async with shell_call(session, sandbox_id, shell_id) as sandbox:
        await sandbox.shells.close(shell_id)
    terminal = session.terminals.find(sandbox_id, shell_id)
    ended = None if terminal is None else await terminal.wait_exit(CLOSE_WAIT_S)
    await session.terminals.drop(sandbox_id, shell_id)
    return ShellClosed(
        shell_id=shell_id,
        closed=True,
        exit_code=None if ended is None else ended.exit_code,
        signal=None if ended is None else ended.signal,
    )


async def shell_list(
    ctx: SessionContext,
    sandbox_id: SandboxId,
    include_ended: Annotated[
        bool, Field(description="Also list the shells that ended within the last 5 minutes.")
    ] = False,
) -> ShellList:
    """List the sandbox's running shells: id, command, size, pid and attached clients."""
    async with sandboxes(ctx).use(sandbox_id) as sandbox:
        found = await sandbox.shells.list()
    return ShellList(shells=[Shell.of(info) for info in found if include_ended or info.running])


def register(server: FastMCP[Sandboxes]) -> None:
    """Add the shell tools to `server` (the full profile)."""
    server.tool(annotations=ToolAnnotations(destructiveHint=False))(shell_open)
    server.tool()(shell_write)
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(shell_read)
    server.tool()(shell_signal)
    server.tool(annotations=ToolAnnotations(destructiveHint=True))(shell_close)
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(shell_list)
