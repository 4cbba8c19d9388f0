"""`Terminals`: the shells one MCP session reads and types into, each through one attach.

The shell tools (`isorun_mcp._shells`) read "what the terminal printed since the last read", so
the server keeps, per shell, one attached `isorun.AsyncTerminal` and a task that copies its
output into a bounded buffer as it comes; each read takes the buffer and so moves the
cursor. The first attach to a shell replays its scrollback: a shell this session did not open
(another session's, or this server's before a restart) starts with what it printed before.
Reading attaches as a reader; the first input attaches again as the writer (the last client to
attach with `write` is the one whose input counts), so a read never takes a person's terminal.

```
ShellTerminal.collect(wait_s, max_bytes)   what came since the last collect, waiting up to
                                           wait_s (less once the shell has exited)
ShellTerminal.send(text)                   type into the shell (the writer role is taken back
                                           first if another client took it)
Terminals.get(sandbox, shell_id, write=)   the shell's terminal, attached on first use (and
                                           again after a broken connection)
```
Output is UTF-8, decoded incrementally (a character split between two chunks is kept whole),
undecodable bytes replaced. Terminal escape sequences are left as they are.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from dataclasses import dataclass

from isorun import (
    AsyncSandbox,
    AsyncTerminal,
    IsorunError,
    ShellExit,
    ShellSkipped,
    TerminalClosed,
)

BUFFER_BYTES = 1024 * 1024
"""Output kept per shell between two reads; older bytes are dropped (and counted) past it."""


@dataclass(frozen=True)
class Collected:
    """One read of a shell's output."""

    output: str
    truncated: bool
    exit: ShellExit | None


class ShellTerminal:
    """One shell, attached, its output buffered until read.

    Args:
        sandbox: The sandbox the shell runs in.
        shell_id: The shell.
    """

    def __init__(self, sandbox: AsyncSandbox, shell_id: str) -> None:
        self.sandbox = sandbox
        self.shell_id = shell_id
        self.exit: ShellExit | None = None
        self._terminal: AsyncTerminal | None = None
        self._pump: asyncio.Task[None] | None = None
        self._buffer = bytearray()
        self._dropped = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def attached(self) -> bool:
        """Whether output is being copied in (False after the shell's end or a broken attach)."""
        return self._pump is not None and not self._pump.done()

    async def attach(self, *, scrollback: bool, write: bool) -> None:
        """Attach (as the writer with `write`) and start copying the output in; an attach
        before is closed once this one is open.

        Raises:
            NotFound: No such shell. The API's other errors.
        """
        terminal = await self.sandbox.shells.attach(
            self.shell_id, write=write, scrollback=scrollback
        )
        await self._stop()
        self._terminal = terminal
        self._pump = asyncio.create_task(self._copy(terminal), name=f"isorun-mcp {self.shell_id}")

    async def _copy(self, terminal: AsyncTerminal) -> None:
        try:
            while True:
                item = await terminal.recv()
                if isinstance(item, bytes):
                    self._append(item)
                elif isinstance(item, ShellSkipped):
                    self._dropped += item.skipped_bytes
                elif isinstance(item, ShellExit):
                    self.exit = item
                self._changed.set()
        except TerminalClosed:
            pass
        except IsorunError:
            # A broken connection (or the sandbox went away): the next call attaches again.
            pass
        finally:
            self._changed.set()

    def _append(self, data: bytes) -> None:
        self._buffer += data
        excess = len(self._buffer) - BUFFER_BYTES
        if excess > 0:
            del self._buffer[:excess]
            self._dropped += excess

    async def send(self, text: str) -> None:
        """Type `text` into the shell, attaching as the writer first unless this session is
        it (first input, or another client attached with `write` since).

        Raises:
            TerminalClosed: The shell has ended. The API's errors.
        """
        if self.exit is not None:
            raise TerminalClosed(f"shell {self.shell_id} exited")
        if self._terminal is None or not self.attached or not self._terminal.writer:
            await self.attach(scrollback=False, write=True)
        assert self._terminal is not None
        await self._terminal.send(text)

    async def collect(
        self, wait_s: float, max_bytes: int, *, settle_s: float | None = None
    ) -> Collected:
        """What the shell printed since the last collect, after waiting up to `wait_s` for
        more. Returns early once the shell has ended, once `max_bytes` are waiting, or (with
        `settle_s`) once output has come and then nothing more for `settle_s`.

        Past `max_bytes` (UTF-8), the middle is cut out and a note says how much.
        """
        async with self._lock:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            while self.attached and len(self._buffer) < max_bytes:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                quiet = settle_s is not None and bool(self._buffer)
                wait = min(remaining, settle_s) if quiet and settle_s is not None else remaining
                self._changed.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self._changed.wait()
                except TimeoutError:
                    if quiet:
                        break
            return self._take(max_bytes)

    def _take(self, max_bytes: int) -> Collected:
        data, dropped = bytes(self._buffer), self._dropped
        self._buffer.clear()
        self._dropped = 0
        text = self._decoder.decode(data, final=not self.attached)
        encoded = text.encode()
        notes = []
        if dropped:
            notes.append(f"[... {dropped} earlier bytes of output were not kept ...]\n")
        if len(encoded) > max_bytes:
            half = max_bytes // 2
            head = encoded[:half].decode("utf-8", errors="ignore")
            tail = encoded[len(encoded) - half :].decode("utf-8", errors="ignore")
            omitted = len(encoded) - 2 * half
            text = f"{head}\n[... {omitted} bytes of output omitted ...]\n{tail}"
        elif not notes:
            return Collected(output=text, truncated=False, exit=self.exit)
        return Collected(output="".join(notes) + text, truncated=True, exit=self.exit)

    async def _stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        if self._terminal is not None:
            with contextlib.suppress(Exception):
                await self._terminal.close()
            self._terminal = None

    async def wait_exit(self, timeout_s: float) -> ShellExit | None:
        """The shell's exit, waiting up to `timeout_s` for it while attached."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.exit is None and self.attached:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        return self.exit

    async def aclose(self) -> None:
        """Detach: the shell keeps running."""
        await self._stop()


class Terminals:
    """The shells one MCP session has touched, by sandbox and shell id."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], ShellTerminal] = {}

    async def get(
        self, sandbox: AsyncSandbox, shell_id: str, *, write: bool = False
    ) -> ShellTerminal:
        """The shell's terminal: attached on first use (with its scrollback; as the writer
        with `write`), and attached again (without) when the last attach broke before the shell
        ended.

        Raises:
            NotFound: No such shell. The API's other errors.
        """
        key = (sandbox.id, shell_id)
        terminal = self._open.get(key)
        if terminal is None:
            terminal = ShellTerminal(sandbox, shell_id)
            await terminal.attach(scrollback=True, write=write)
            self._open[key] = terminal
        elif not terminal.attached and terminal.exit is None:
            await terminal.attach(scrollback=False, write=write)
        return terminal

    def find(self, sandbox_id: str, shell_id: str) -> ShellTerminal | None:
        """The shell's terminal if this session has attached to it; never attaches."""
        return self._open.get((sandbox_id, shell_id))

    async def drop(self, sandbox_id: str, shell_id: str) -> ShellTerminal | None:
        """Forget the shell, detaching from it; returns what it was."""
        terminal = self._open.pop((sandbox_id, shell_id), None)
        if terminal is not None:
            await terminal.aclose()
        return terminal

    async def aclose(self) -> None:
        """Detach from every shell (they keep running)."""
        terminals, self._open = list(self._open.values()), {}
        for terminal in terminals:
            await terminal.aclose()
