"""The host end of one stream attached to a guest shell (protocol.md 5.6).

```
attach_shell(id, write=...) ─► EVENT start (pid, size, writer?) ─► ShellAttachment
  events():  output bytes (channel 1: scrollback first, then live) and ShellSkipped,
             ShellWriter, ShellResized, until the shell has ended: then ``end`` is set
  write():   input to the terminal (the writer's; a reader's is dropped by the agent)
  detach():  CANCEL: the shell keeps running, attach again later
```
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, TypeAdapter, ValidationError

from isorun_hostd.agent_channel.errors import ProtocolViolation
from isorun_hostd.agent_channel.protocol import (
    Channel,
    FrameType,
    ShellEnd,
    ShellResized,
    ShellSkipped,
    ShellStart,
    ShellWriter,
)

if TYPE_CHECKING:
    from isorun_hostd.agent_channel.channel import _Stream

ShellEvent = ShellSkipped | ShellWriter | ShellResized
_EVENTS: TypeAdapter[ShellEvent] = TypeAdapter(Annotated[ShellEvent, Field(discriminator="event")])


class ShellAttachment:
    """One attached stream; several may follow one shell, at most one of them the writer."""

    def __init__(self, stream: _Stream, shell_id: str, start: ShellStart) -> None:
        self._stream = stream
        self.shell_id = shell_id
        self.pid = start.pid
        self.cols, self.rows = start.cols, start.rows
        self.writer = start.writer
        self.end: ShellEnd | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    async def events(self) -> AsyncIterator[bytes | ShellEvent]:
        """Terminal output and events as they arrive, until the shell has ended (``end``)."""
        stream = self._stream
        while self.end is None:
            frame = await stream.next()
            if frame.type == FrameType.DATA:
                if frame.flags != Channel.STDOUT:
                    raise ProtocolViolation(f"shell output on channel {frame.flags}")
                self.bytes_out += len(frame.payload)
                yield frame.payload
            elif frame.type == FrameType.EVENT:
                try:
                    event = _EVENTS.validate_json(frame.payload, strict=True)
                except ValidationError as exc:
                    raise ProtocolViolation(
                        f"shell_attach: invalid event: {exc.errors()[0]['msg']}"
                    ) from exc
                if isinstance(event, ShellWriter):
                    self.writer = event.writer
                elif isinstance(event, ShellResized):
                    self.cols, self.rows = event.cols, event.rows
                yield event
            elif frame.type in (FrameType.REPLY, FrameType.ERROR):
                stream.channel._forget(stream)
                self.end = stream.decode(frame, ShellEnd, FrameType.REPLY)
            elif frame.type != FrameType.EOF:
                raise ProtocolViolation(f"shell_attach: unexpected frame {frame.type}")

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the terminal as typed (``b"\\x03"`` is Ctrl-C)."""
        await self._stream.channel._send_data(self._stream, Channel.INPUT, data)
        self.bytes_in += len(data)

    def detach(self) -> None:
        """Stop following the shell; it keeps running and can be attached again."""
        if self.end is None:
            self._stream.channel._abandon(self._stream)
