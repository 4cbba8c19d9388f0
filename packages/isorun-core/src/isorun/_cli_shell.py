"""`isorun shell`: a persistent shell in a sandbox, with this terminal attached as its writer.

```
isorun shell ID [--command CMD]     open a shell (a login bash, or CMD under /bin/sh -c), attach
isorun shell ID --attach SHELL_ID   attach again: its scrollback first, then live
isorun shell ID --list              the sandbox's shells
isorun shell ID --close SHELL_ID    hang one up
```
On a terminal, this one goes raw (every key reaches the shell, Ctrl-C included), follows its
window size (SIGWINCH sends a resize), and Ctrl-] detaches: the shell keeps running and the way
back is printed. Without a terminal, stdin is copied to the shell as it comes, and nothing more
at its end: a terminal has no end of input to pass on reliably (a Ctrl-D is one only where the
program reading it is at the start of a line), so a piped script ends with `exit`. Either way,
the command exits with the shell's status (128 + N when signal N killed it) once the shell
exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any

from isorun._async_sandbox import AsyncSandbox
from isorun._client import AsyncClient
from isorun._errors import IsorunError, ProtocolError, TerminalClosed
from isorun._models import Shell
from isorun._terminal import AsyncTerminal

DETACH_KEY = b"\x1d"  # Ctrl-], as telnet's escape
CHUNK_BYTES = 64 * 1024


def add_commands(commands: Any) -> None:
    """isorun shell ID [--command CMD | --attach SHELL_ID | --list | --close SHELL_ID]."""
    shell = commands.add_parser(
        "shell", help="open a persistent shell in a sandbox and attach this terminal to it"
    )
    shell.add_argument("sandbox_id")
    action = shell.add_mutually_exclusive_group()
    action.add_argument("--command", help="run CMD (under /bin/sh -c) instead of a login shell")
    action.add_argument("--attach", metavar="SHELL_ID", help="attach to a running shell again")
    action.add_argument("--list", action="store_true", help="list the sandbox's shells")
    action.add_argument("--close", metavar="SHELL_ID", help="hang up a shell")
    shell.set_defaults(handler=_shell)


def _shell(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with AsyncClient() as client:
            sandbox = await AsyncSandbox.connect(args.sandbox_id, client=client)
            if args.list:
                _print_shells(await sandbox.shells.list())
                return 0
            if args.close is not None:
                await sandbox.shells.close(args.close)
                return 0
            return await _session(sandbox, args.attach, args.command)

    return asyncio.run(run())


def _print_shells(shells: list[Shell]) -> None:
    rows = [("ID", "PID", "STATE", "SIZE", "ATTACHED", "STARTED", "COMMAND")]
    for shell in shells:
        if shell.running:
            state = "running"
        elif shell.signal is not None:
            state = f"killed {shell.signal}"
        else:
            state = f"exited {shell.exit_code}"
        attached = f"{shell.attached}{' (writer)' if shell.writer else ''}"
        started = shell.started_at.isoformat(timespec="seconds")
        size = f"{shell.cols}x{shell.rows}"
        command = " ".join(shell.command)
        rows.append((shell.id, str(shell.pid), state, size, attached, started, command))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


async def _session(sandbox: AsyncSandbox, shell_id: str | None, command: str | None) -> int:
    """Attach stdin and stdout to a shell (a new one without `shell_id`) until it exits or
    the user detaches; the exit status to leave with.

    Raises:
        ProtocolError: The attach ended without the shell's exit.
    """
    interactive = sys.stdin.isatty()
    size = _window_size() if interactive else None
    opening = sandbox.shells.attach
    if shell_id is None:
        cols, rows = size or (80, 24)
        shell_id = (await sandbox.shells.create(command, cols=cols, rows=rows)).id
        try:
            term = await opening(shell_id, write=True)
        except BaseException:
            # Nobody could ever find the shell this call made: do not leave it running.
            with contextlib.suppress(IsorunError):
                await sandbox.shells.close(shell_id)
            raise
    else:
        term = await opening(shell_id, write=True)
    async with term:
        if size is not None and size != (term.cols, term.rows):
            await term.resize(*size)  # a shell opened from another window: fit it to ours
        with _raw_mode(interactive), _following_window(term, interactive):
            detached = await _copy_both_ways(term, detach_key=interactive)
    if detached:
        print(
            f"isorun: detached; reattach with: isorun shell {sandbox.id} --attach {shell_id}",
            file=sys.stderr,
        )
        return 0
    if term.exit is None:
        raise ProtocolError(f"the attach to {shell_id} ended without the shell's exit")
    return term.exit.status


async def _copy_both_ways(term: AsyncTerminal, *, detach_key: bool) -> bool:
    """Copy until the shell exits or the attach ends (False), or the user detaches (True)."""
    output = asyncio.create_task(_copy_output(term))
    typing = asyncio.create_task(_copy_input(term, detach_key=detach_key))
    try:
        await asyncio.wait({output, typing}, return_when=asyncio.FIRST_COMPLETED)
        if typing.done() and typing.result():
            return True
        await output
        return False
    finally:
        for task in (output, typing):
            task.cancel()
        await asyncio.gather(output, typing, return_exceptions=True)


async def _copy_output(term: AsyncTerminal) -> None:
    async for chunk in term:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


async def _copy_input(term: AsyncTerminal, *, detach_key: bool) -> bool:
    """Copy stdin to the shell; True when the user detached, False at the end of stdin or of
    the attach (the output side has the shell's exit)."""
    fd = sys.stdin.fileno()
    with contextlib.suppress(TerminalClosed):
        while chunk := await _read(fd):
            if detach_key and DETACH_KEY in chunk:
                await term.send(chunk[: chunk.index(DETACH_KEY)])
                return True
            await term.send(chunk)
    return False


async def _read(fd: int) -> bytes:
    """The next chunk of `fd`, empty at its end, read when it is ready."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():  # called again until the reader is removed
            ready.set_result(None)

    try:
        loop.add_reader(fd, wake)
    except PermissionError:
        # A regular file or /dev/null: epoll refuses them, and their reads never block.
        return await asyncio.to_thread(os.read, fd, CHUNK_BYTES)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    try:
        return os.read(fd, CHUNK_BYTES)
    except OSError:
        return b""  # a terminal that hung up


def _window_size() -> tuple[int, int]:
    size = os.get_terminal_size(sys.stdin.fileno())
    return size.columns, size.lines


@contextlib.contextmanager
def _raw_mode(interactive: bool) -> Iterator[None]:
    """This terminal raw (keys go to the shell as typed) until the block ends; restored also
    when it raised."""
    if not interactive:
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # not the default TCSAFLUSH: keep what was typed ahead
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _following_window(term: AsyncTerminal, interactive: bool) -> Iterator[None]:
    """Resize the shell whenever this terminal's window changes (SIGWINCH)."""
    if not interactive:
        yield
        return
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    async def follow() -> None:
        with contextlib.suppress(TerminalClosed):  # the shell just ended: nothing to resize
            await term.resize(*_window_size())

    def resize() -> None:
        task = loop.create_task(follow())
        pending.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGWINCH, resize)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)
