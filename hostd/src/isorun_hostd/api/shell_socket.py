"""One client's WebSocket on an attached shell, pumped both ways (spec/api.md "Shells").

```
relay(websocket, shell)   start ─► output (binary) and events (text) as the client takes them
                          ◄─ input (binary) and resize/signal (text) as they come
                          returns when the client goes away, or after exit (closed 1000) or a
                          bad control frame (closed 1007); raises what ``shell`` raised
```
The node API serves it over the agent channel (ChannelTerminal), the public API over a node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from isorun_hostd.agent_channel import AgentChannel, ShellAttachment, ShellEnd, ShellEvent
from isorun_hostd.api.shell_frames import (
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    ResizeFrame,
    SignalTarget,
    cut_reason,
    event_frame,
    parse_control,
    start_frame,
)


class TerminalStream(Protocol):
    """An attached shell: ``pid``, the size and the writer lease as of the attach."""

    @property
    def pid(self) -> int: ...

    @property
    def cols(self) -> int: ...

    @property
    def rows(self) -> int: ...

    @property
    def writer(self) -> bool: ...

    @property
    def end(self) -> ShellEnd | None:
        """How the shell ended, once ``events`` has run out."""
        ...

    def events(self) -> AsyncIterator[bytes | ShellEvent]:
        """Output and events until the shell has ended (then ``end`` is set)."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def resize(self, cols: int, rows: int) -> None: ...

    async def signal(self, signum: int, target: SignalTarget) -> None: ...


class ChannelTerminal:
    """A TerminalStream over the agent channel: the attachment, and the channel for the
    resizes and signals, which the agent takes as requests of their own."""

    def __init__(self, attachment: ShellAttachment, channel: AgentChannel) -> None:
        self._attachment = attachment
        self._channel = channel

    @property
    def pid(self) -> int:
        return self._attachment.pid

    @property
    def cols(self) -> int:
        return self._attachment.cols

    @property
    def rows(self) -> int:
        return self._attachment.rows

    @property
    def writer(self) -> bool:
        return self._attachment.writer

    @property
    def end(self) -> ShellEnd | None:
        return self._attachment.end

    def events(self) -> AsyncIterator[bytes | ShellEvent]:
        return self._attachment.events()

    async def write(self, data: bytes) -> None:
        await self._attachment.write(data)

    async def resize(self, cols: int, rows: int) -> None:
        await self._channel.resize_shell(self._attachment.shell_id, cols=cols, rows=rows)

    async def signal(self, signum: int, target: SignalTarget) -> None:
        await self._channel.signal_shell(self._attachment.shell_id, signum, target=target)


class _BadFrame(Exception):
    pass


async def relay(websocket: WebSocket, shell: TerminalStream) -> None:
    """Pump ``shell`` and the accepted ``websocket`` both ways until either side is done."""
    try:
        await websocket.send_text(
            start_frame(pid=shell.pid, cols=shell.cols, rows=shell.rows, writer=shell.writer)
        )
    except WebSocketDisconnect:
        return
    output = asyncio.create_task(_output(websocket, shell))
    intake = asyncio.create_task(_input(websocket, shell))
    try:
        done, _ = await asyncio.wait((output, intake), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (output, intake):
            task.cancel()
        await asyncio.gather(output, intake, return_exceptions=True)
    try:
        ended = any(task.result() for task in done)
    except WebSocketDisconnect:
        return
    except _BadFrame as exc:
        await close(websocket, CLOSE_INVALID_DATA, str(exc))
        return
    if ended:
        await close(websocket, CLOSE_NORMAL)


async def close(websocket: WebSocket, code: int, reason: str = "") -> None:
    """Close unless the client has gone already (then there is nobody to tell)."""
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.close(code, cut_reason(reason))


async def _output(websocket: WebSocket, shell: TerminalStream) -> bool:
    """True once the shell has ended and the client has its ``exit``."""
    async for item in shell.events():
        if isinstance(item, bytes):
            await websocket.send_bytes(item)
        else:
            await websocket.send_text(event_frame(item))
    if shell.end is not None:
        await websocket.send_text(event_frame(shell.end))
    return True


async def _input(websocket: WebSocket, shell: TerminalStream) -> bool:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return False
        if message.get("bytes"):
            await shell.write(message["bytes"])
        elif message.get("text") is not None:
            try:
                frame = parse_control(message["text"])
            except ValueError as exc:
                raise _BadFrame(f"not a resize or signal frame: {exc}") from exc
            if isinstance(frame, ResizeFrame):
                await shell.resize(frame.cols, frame.rows)
            else:
                await shell.signal(frame.signal, frame.target)
