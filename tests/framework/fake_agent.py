"""A scripted stand-in for the guest agent, speaking the wire protocol over a unix socket.

It tests the host side's handling of what a (possibly hostile) agent sends; the real agent is
tested against the same protocol in Go and end to end in VMs.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from isorun_hostd.agent_channel.framing import Decoder, Frame, encode
from isorun_hostd.agent_channel.protocol import FrameType

Handler = Callable[["FakeAgent", Frame, dict[str, Any]], Awaitable[None]]


class FakeAgent:
    def __init__(self, handler: Handler, *, stale: bytes = b"") -> None:
        self.handler = handler
        self.stale = stale
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.credits: dict[int, int] = {}
        self.writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, path: Path) -> None:
        self._server = await asyncio.start_unix_server(self._conn, str(path))

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()

    def send(self, ftype: int, stream: int, payload: bytes = b"", flags: int = 0) -> None:
        assert self.writer is not None
        self.writer.write(encode(ftype, stream, payload, flags))

    def send_json(self, ftype: int, stream: int, obj: object) -> None:
        self.send(ftype, stream, json.dumps(obj).encode())

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        writer.write(self.stale)
        decoder = Decoder()
        decoder.strict = True  # the host writes whole frames; its DATA exceeds the scan limit
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    await self._dispatch(frame)
        except (asyncio.CancelledError, ConnectionError):
            return

    async def _dispatch(self, frame: Frame) -> None:
        if frame.type == FrameType.HELLO:
            hello = json.loads(frame.payload)
            self.send_json(
                FrameType.REPLY, 0, {"session": "not-yours", "protocol": 1, "agent_version": "x"}
            )
            self.send_json(FrameType.REPLY, 0, {**hello, "agent_version": "fake-1"})
        elif frame.type == FrameType.REQUEST:
            task = asyncio.create_task(self.handler(self, frame, json.loads(frame.payload)))
            self._tasks.add(task)
        elif frame.type == FrameType.CREDIT:
            self.credits[frame.stream] = (
                self.credits.get(frame.stream, 0) + struct.unpack(">I", frame.payload)[0]
            )
            await self.frames.put(frame)
        else:
            await self.frames.put(frame)
