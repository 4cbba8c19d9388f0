"""The host end of a TCP tunnel to a port on the guest's loopback (protocol.md 5.7).

```
connect_port(port) ─► EVENT connected ─► Tunnel
  write():     DATA channel 0, as the agent's credit allows ─► the guest socket
  write_eof(): EOF channel 0 ─► the guest socket's write side is shut down
  read():      the guest socket's bytes (DATA channel 1), b"" at its EOF
  wait():      after both EOFs: the REPLY (``end``: bytes each way)
  close():     CANCEL: the agent closes the guest socket at once
```
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from isorun_hostd.agent_channel.errors import ProtocolViolation
from isorun_hostd.agent_channel.framing import Frame
from isorun_hostd.agent_channel.protocol import Channel, FrameType, TunnelEnd

if TYPE_CHECKING:
    from isorun_hostd.agent_channel.channel import _Stream


class Tunnel:
    """One TCP connection inside the guest, carried on one stream.

    Example:
        async with await channel.connect_port(8000) as tunnel:
            await tunnel.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
            await tunnel.write_eof()
            while chunk := await tunnel.read(): ...
    """

    def __init__(self, stream: _Stream, port: int) -> None:
        self._stream = stream
        self.port = port
        self.end: TunnelEnd | None = None
        self._eof = False

    async def read(self) -> bytes:
        """The next bytes the guest side sent; ``b""`` once it has closed its side.

        Raises:
            AgentError: the agent failed the stream (``flow_control``, ...).
            ChannelClosed, ProtocolViolation: the channel broke.
        """
        stream = self._stream
        while not self._eof:
            frame = await stream.next()
            if frame.type == FrameType.DATA:
                if frame.flags != Channel.STDOUT:
                    raise ProtocolViolation(f"connect: data on channel {frame.flags}")
                return frame.payload
            if frame.type == FrameType.EOF:
                if frame.flags == Channel.STDOUT:
                    self._eof = True
            elif frame.type in (FrameType.REPLY, FrameType.ERROR):
                self._eof = True
                self._finish(frame)
            else:
                raise ProtocolViolation(f"connect: unexpected frame {frame.type}")
        return b""

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the guest socket; waits while the agent's window is used up.

        Raises:
            InputRefused: the tunnel has ended (the guest side stopped taking input).
        """
        await self._stream.channel._send_data(self._stream, Channel.INPUT, data)

    async def write_eof(self) -> None:
        """Half-close: the guest server sees end of input and may still answer."""
        await self._stream.channel._send(FrameType.EOF, self._stream.id, flags=Channel.INPUT)

    async def wait(self) -> TunnelEnd:
        """Discard unread output and wait for the end, which comes once the guest side has
        closed and ``write_eof`` was sent (or the guest stopped taking input)."""
        while self.end is None:
            if self._eof:
                frame = await self._stream.next()
                if frame.type not in (FrameType.REPLY, FrameType.ERROR):
                    raise ProtocolViolation(f"connect: frame {frame.type} after EOF")
                self._finish(frame)
            else:
                await self.read()
        return self.end

    def _finish(self, frame: Frame) -> None:
        self._stream.channel._forget(self._stream)
        self.end = self._stream.decode(frame, TunnelEnd, FrameType.REPLY)

    def close(self) -> None:
        """Abandon the tunnel: the agent closes the guest socket (no end is reported)."""
        if self.end is None:
            self._stream.channel._abandon(self._stream)

    async def __aenter__(self) -> Tunnel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
