"""`Terminal` and `AsyncTerminal`: one client attached to a persistent shell over a WebSocket.

```
with sb.shells.attach(shell.id, write=True) as term:   open; the `start` frame fills pid, size
    term.send("ls\\n")                                   input (a reader's is dropped)
    term.read_until("$ ", timeout=10)                   output up to a prompt
    term.recv(timeout=1)                                next output chunk (bytes) or ShellEvent
    for chunk in term: ...                              output until the shell exits
    term.resize(120, 40) / term.signal(2)               control frames
leaving the block / term.close()                        detach: the shell keeps running
```
`AsyncTerminal` is the twin with `await` and `async for`. Both keep what the events said on the
connection: `exit` (once the shell ended), `writer`, `cols`, `rows`. The frames and the errors
are in `_terminal_wire`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from types import TracebackType

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from isorun._base import USER_AGENT
from isorun._errors import (
    ProtocolError,
    ReadTimeout,
    TerminalClosed,
    TerminalError,
    TerminalTimeout,
)
from isorun._models import ShellEvent, ShellExit, ShellResized, ShellWriter
from isorun._pending import Pending
from isorun._terminal_wire import (
    Pattern,
    Start,
    WebSocketTarget,
    closed_error,
    find,
    input_bytes,
    parse_event,
    parse_start,
    resize_frame,
    signal_frame,
    translate_opening,
)


class _TerminalState:
    """What both terminals know about their shell; updated by each frame, no I/O."""

    def __init__(self, start: Start, *, sandbox_id: str, shell_id: str) -> None:
        self.sandbox_id = sandbox_id
        self.shell_id = shell_id
        self.pid = start.pid
        """The shell's pid in the guest."""
        self.cols = start.cols
        """The terminal's width, as of the last resize seen."""
        self.rows = start.rows
        """The terminal's height, as of the last resize seen."""
        self.writer = start.writer
        """Whether this client's input reaches the terminal (False once another took over)."""
        self.exit: ShellExit | None = None
        """The shell's exit, once this client has read it."""
        # Output read past the end of a `read_until` match, given out first by the next read.
        self._pending = b""

    def _take(self, frame: str | bytes) -> bytes | ShellEvent | None:
        """The output or event of a frame (None for one of an unknown type), noted."""
        if isinstance(frame, bytes):
            return frame
        event = parse_event(frame, sandbox_id=self.sandbox_id)
        if isinstance(event, ShellResized):
            self.cols, self.rows = event.cols, event.rows
        elif isinstance(event, ShellWriter):
            self.writer = event.writer
        elif isinstance(event, ShellExit):
            self.exit = event
        return event

    def _take_pending(self) -> bytes:
        pending, self._pending = self._pending, b""
        return pending

    def _match(self, buffer: bytes, pattern: Pattern) -> bytes | None:
        """`buffer` up to the end of `pattern`'s first match (the rest kept for later)."""
        end = find(buffer, pattern)
        if end < 0:
            return None
        self._pending = buffer[end:]
        return buffer[:end]

    @contextmanager
    def _translate_close(self) -> Iterator[None]:
        try:
            yield
        except ConnectionClosed as exc:
            error = closed_error(exc, sandbox_id=self.sandbox_id)
            if error is not None:
                raise error from exc
            how = "exited" if self.exit is not None else "is no longer attached"
            raise TerminalClosed(
                f"shell {self.shell_id} {how}", sandbox_id=self.sandbox_id
            ) from exc

    def _unmatched(
        self, exc: TerminalError, pattern: Pattern, timeout: float | None, output: bytes
    ) -> TerminalError:
        """`read_until`'s error: the same kind as `exc`, with everything read, which is kept
        for the next read too (a retry with a longer timeout loses nothing)."""
        self._pending = output
        what = f"shell {self.shell_id}: no {pattern!r} in the output"
        if isinstance(exc, TerminalTimeout):
            return TerminalTimeout(
                f"{what} within {timeout} s", output=output, sandbox_id=self.sandbox_id
            )
        return TerminalClosed(f"{what}: {exc}", output=output, sandbox_id=self.sandbox_id)

    def _timeout(self, timeout: float | None) -> TerminalTimeout:
        return TerminalTimeout(
            f"shell {self.shell_id}: nothing within {timeout} s", sandbox_id=self.sandbox_id
        )

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(shell_id={self.shell_id!r}, pid={self.pid}, writer={self.writer})"


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


@contextmanager
def _awaiting_start(sandbox_id: str) -> Iterator[None]:
    """Errors while waiting for the `start` frame: a refusal closes the socket before it."""
    try:
        yield
    except ConnectionClosed as exc:
        error = closed_error(exc, sandbox_id=sandbox_id)
        raise error or ProtocolError(
            "the attach ended before its start", sandbox_id=sandbox_id
        ) from exc
    except TimeoutError as exc:
        raise ReadTimeout("attach: no start frame in time", sandbox_id=sandbox_id) from exc


class Terminal(_TerminalState):
    """A client attached to a shell: `sb.shells.attach(...)`. Closing it detaches.

    Errors of every method: `TerminalClosed` once the attach has ended, `ReadError` when the
    connection broke, and the API's errors when the server ended the attach with one.
    """

    def __init__(
        self, ws: ClientConnection, start: Start, *, sandbox_id: str, shell_id: str
    ) -> None:
        super().__init__(start, sandbox_id=sandbox_id, shell_id=shell_id)
        self._ws = ws

    @classmethod
    def open(cls, target: WebSocketTarget, *, sandbox_id: str, shell_id: str) -> Terminal:
        """Open the attach and read its `start` frame.

        Raises:
            NotFound: No such shell. SandboxNotFound: no such sandbox.
            SandboxStateError: The sandbox is stopped.
            AuthenticationError: The key was refused.
            ConnectError, ConnectTimeout, ProtocolError: No attach could be opened.
            ReadTimeout: The attach opened, but its `start` frame did not come in time.
        """
        with translate_opening(sandbox_id):
            ws = connect(
                target.url,
                additional_headers=dict(target.headers),
                user_agent_header=USER_AGENT,
                ssl=target.ssl,
                open_timeout=target.open_timeout,
            )
        try:
            with _awaiting_start(sandbox_id):
                start = parse_start(ws.recv(timeout=target.open_timeout), sandbox_id=sandbox_id)
        except BaseException:
            ws.close()
            raise
        return cls(ws, start, sandbox_id=sandbox_id, shell_id=shell_id)

    def send(self, data: bytes | str) -> None:
        """Type `data` into the terminal (text as UTF-8; `"\\x03"` is Ctrl-C). A reader's
        input is dropped by the server."""
        with self._translate_close():
            self._ws.send(input_bytes(data))

    def recv(self, timeout: float | None = None) -> bytes | ShellEvent:
        """The next chunk of output, or the next event (`ShellExit` last).

        Raises:
            TerminalTimeout: Nothing came within `timeout` seconds (None: wait for ever).
            TerminalClosed: The attach has ended (after the `ShellExit`, or `close()`).
        """
        if pending := self._take_pending():
            return pending
        deadline = _deadline(timeout)
        while True:
            try:
                with self._translate_close():
                    frame = self._ws.recv(timeout=_remaining(deadline))
            except TimeoutError:
                raise self._timeout(timeout) from None
            item = self._take(frame)
            if item is not None:
                return item

    def read_until(self, pattern: Pattern, timeout: float | None = None) -> bytes:
        """Read output until `pattern` shows up; return it up to the match's end (what came
        after is kept for the next read). Events met on the way only update `exit`, `writer`,
        `cols` and `rows`.

        Args:
            pattern: A literal (text as UTF-8), or a compiled bytes regex.
            timeout: Seconds for the whole wait; None for no limit.

        Raises:
            TerminalTimeout: No match in time; its `output` holds what was read (the next
                read gives it again).
            TerminalClosed: The shell ended first; its `output` holds what was read.
        """
        deadline = _deadline(timeout)
        buffer = b""
        while (matched := self._match(buffer, pattern)) is None:
            try:
                item = self.recv(_remaining(deadline))
            except TerminalError as exc:
                raise self._unmatched(exc, pattern, timeout, buffer) from exc
            if isinstance(item, bytes):
                buffer += item
        return matched

    def __iter__(self) -> Iterator[bytes]:
        """The output, chunk by chunk, until the shell exits (events update the attributes)."""
        while True:
            try:
                item = self.recv()
            except TerminalClosed:
                return
            if isinstance(item, bytes):
                yield item

    def resize(self, cols: int, rows: int) -> None:
        """Resize the terminal (every attached client sees a `ShellResized`)."""
        with self._translate_close():
            self._ws.send(resize_frame(cols, rows))

    def signal(self, signal: int, target: str = "foreground") -> None:
        """Send `signal` to the job in front (`"foreground"`, as a key would) or the shell's
        own process group (`"shell"`).

        Raises:
            UsageError: Another target.
        """
        with self._translate_close():
            self._ws.send(signal_frame(signal, target))

    def close(self) -> None:
        """Detach: the shell keeps running. A second call does nothing."""
        self._ws.close()

    def __enter__(self) -> Terminal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncTerminal(_TerminalState):
    """A client attached to a shell, from asyncio; as `Terminal`, awaited."""

    def __init__(
        self, ws: AsyncConnection, start: Start, *, sandbox_id: str, shell_id: str
    ) -> None:
        super().__init__(start, sandbox_id=sandbox_id, shell_id=shell_id)
        self._ws = ws

    @classmethod
    async def open(
        cls, target: WebSocketTarget, *, sandbox_id: str, shell_id: str
    ) -> AsyncTerminal:
        """As `Terminal.open`."""
        with translate_opening(sandbox_id):
            ws = await async_connect(
                target.url,
                additional_headers=dict(target.headers),
                user_agent_header=USER_AGENT,
                ssl=target.ssl,
                open_timeout=target.open_timeout,
            )
        try:
            with _awaiting_start(sandbox_id):
                async with asyncio.timeout(target.open_timeout):
                    frame = await ws.recv()
                start = parse_start(frame, sandbox_id=sandbox_id)
        except BaseException:
            await ws.close()
            raise
        return cls(ws, start, sandbox_id=sandbox_id, shell_id=shell_id)

    async def send(self, data: bytes | str) -> None:
        """As `Terminal.send`."""
        with self._translate_close():
            await self._ws.send(input_bytes(data))

    async def recv(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - the sync twin's argument, same meaning
    ) -> bytes | ShellEvent:
        """As `Terminal.recv`."""
        if pending := self._take_pending():
            return pending
        try:
            async with asyncio.timeout(timeout):
                while True:
                    with self._translate_close():
                        frame = await self._ws.recv()
                    item = self._take(frame)
                    if item is not None:
                        return item
        except TimeoutError:
            raise self._timeout(timeout) from None

    async def read_until(
        self,
        pattern: Pattern,
        timeout: float | None = None,  # noqa: ASYNC109 - the sync twin's argument, same meaning
    ) -> bytes:
        """As `Terminal.read_until`."""
        deadline = _deadline(timeout)
        buffer = b""
        while (matched := self._match(buffer, pattern)) is None:
            try:
                item = await self.recv(_remaining(deadline))
            except TerminalError as exc:
                raise self._unmatched(exc, pattern, timeout, buffer) from exc
            if isinstance(item, bytes):
                buffer += item
        return matched

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """As `Terminal.__iter__`."""
        while True:
            try:
                item = await self.recv()
            except TerminalClosed:
                return
            if isinstance(item, bytes):
                yield item

    async def resize(self, cols: int, rows: int) -> None:
        """As `Terminal.resize`."""
        with self._translate_close():
            await self._ws.send(resize_frame(cols, rows))

    async def signal(self, signal: int, target: str = "foreground") -> None:
        """As `Terminal.signal`."""
        with self._translate_close():
            await self._ws.send(signal_frame(signal, target))

    async def close(self) -> None:
        """As `Terminal.close`."""
        await self._ws.close()

    async def __aenter__(self) -> AsyncTerminal:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class TerminalOpening(Pending["AsyncTerminal"]):
    """A pending `AsyncShells.attach`: `await` it, or enter it with `async with` (which also
    detaches on exit). Nothing is opened until then, and it can be used once."""

    _what = "this attach(...)"

    async def _end(
        self,
        value: AsyncTerminal,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await value.close()
