"""The host end of the agent channel: one connection, many concurrent streams.

```
 callers ──► AgentChannel.call / exec / read_file / write_file
               │ opens a _Stream (id chosen here), sends REQUEST
               ▼
 _bg_read ◄── unix socket ◄── QEMU virtio-serial ◄── guest agent
   │ decodes frames, routes each to its _Stream's inbox, applies CREDIT
   └─ on EOF or a protocol error: every open stream fails with ChannelClosed
```

Flow control (protocol.md section 4) is per stream and per direction. Incoming DATA is counted
against the window this side granted; the window is topped up with CREDIT only when the caller
has taken the bytes out of the inbox, so a stream nobody reads holds at most one window in host
memory and blocks only its own process in the guest. Outgoing DATA waits for the agent's credit.

A session starts with HELLO; frames before the matching reply are leftovers of an earlier
connection and are skipped (see ``framing``). After the handshake any invalid frame closes the
channel: the agent owns the port alone, so invalid bytes mean a broken or hostile agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import struct
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from isorun_hostd.agent_channel.errors import (
    AgentError,
    ChannelClosed,
    ChannelError,
    InputRefused,
    ProtocolViolation,
)
from isorun_hostd.agent_channel.framing import Decoder, Frame, FramingError, encode
from isorun_hostd.agent_channel.protocol import (
    DATA_CHUNK_BYTES,
    HEADER_BYTES,
    INITIAL_WINDOW_BYTES,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    ByteCount,
    Channel,
    Connected,
    Empty,
    EntriesEvent,
    ErrorReply,
    ExecEnd,
    ExecRequest,
    FileStat,
    FrameType,
    HelloReply,
    IdentityReply,
    IdentityRequest,
    Listing,
    ShellInfo,
    ShellList,
    ShellOpened,
    ShellRequest,
    ShellStart,
    StartEvent,
    StatEvent,
)
from isorun_hostd.agent_channel.shells import ShellAttachment
from isorun_hostd.agent_channel.tunnel import Tunnel

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 256 << 10
# Unread JSON frames one stream may hold; the protocol never needs more than a handful, so more
# is a guest trying to make hostd buffer for it.
MAX_QUEUED_CONTROL_FRAMES = 64
MAX_QUEUED_CONTROL_BYTES = 4 << 20
# Everything unread on one channel: windows bound DATA per stream, this bounds the sum.
MAX_QUEUED_BYTES = 128 << 20
MAX_LISTING_ENTRIES = 200_000

_Model = TypeVar("_Model", bound=BaseModel)
_CREDIT = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Output:
    """A chunk of process output."""

    channel: Channel
    data: bytes


class _Stream:
    """One request's state. The inbox holds frames in arrival order, or the error that ended it."""

    def __init__(self, channel: AgentChannel, stream_id: int, op: str) -> None:
        self.channel = channel
        self.id = stream_id
        self.op = op
        self.inbox: asyncio.Queue[Frame | ChannelError] = asyncio.Queue()
        self.control_frames = 0
        self.control_bytes = 0
        self.error: ChannelError | None = None
        self.send_credit = INITIAL_WINDOW_BYTES
        self.credit_changed = asyncio.Event()
        self.recv_in_flight = 0
        self.recv_to_grant = 0
        self.done = False

    async def next(self) -> Frame:
        """The next frame. Raises the stream's error (ChannelError) once it has failed."""
        item = await self.inbox.get()
        if isinstance(item, ChannelError):
            self.inbox.put_nowait(item)
            raise item
        self.channel._queued_bytes -= len(item.payload)
        if item.type == FrameType.DATA:
            self.channel._consumed(self, len(item.payload))
        else:
            self.control_frames -= 1
            self.control_bytes -= len(item.payload)
        return item

    async def expect(self, model: type[_Model], frame_type: FrameType) -> _Model:
        """The next frame as ``model``; an ERROR becomes AgentError."""
        return self.decode(await self.next(), model, frame_type)

    def decode(self, frame: Frame, model: type[_Model], frame_type: FrameType) -> _Model:
        """``frame`` as ``model``; an ERROR becomes AgentError."""
        if frame.type == FrameType.ERROR:
            err = _parse(ErrorReply, frame.payload, self.op)
            raise AgentError(self.op, err.code, err.message)
        if frame.type != frame_type:
            raise ProtocolViolation(
                f"{self.op}: expected {frame_type.name}, got frame {frame.type}"
            )
        return _parse(model, frame.payload, self.op)

    def fail(self, error: ChannelError) -> None:
        self.done = True
        self.error = error
        self.inbox.put_nowait(error)
        self.credit_changed.set()


class AgentChannel:
    """A session with the guest agent over its virtio-serial socket.

    Example:
        channel = await AgentChannel.connect(run_dir / "agent.sock", timeout_s=30)
        process = await channel.exec(ExecRequest(argv=["uname", "-a"]))
        async for chunk in process.output(): ...
        end = await process.wait()
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = Decoder()
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1
        self._closed: ChannelClosed | None = None
        self._queued_bytes = 0
        self._send_lock = asyncio.Lock()
        self._frames_written = 0
        self._session = secrets.token_hex(16)
        self._hello: asyncio.Future[HelloReply] = asyncio.get_running_loop().create_future()
        self._reader_task = asyncio.create_task(self._bg_read(), name="agent-channel-read")
        self.agent_version = ""

    @classmethod
    async def connect(
        cls, socket_path: Path, *, timeout_s: float, reconnect: bool = False
    ) -> AgentChannel:
        """Connect to the agent's socket and complete the handshake.

        The socket accepts before the guest has booted; the HELLO waits in QEMU until the agent
        opens its port, so the handshake completing is what "agent ready" means. ``reconnect``
        says the guest has had a host before (hostd restart, restore, fork): the HELLO is then
        preceded by a flush that completes any frame an earlier host left half-sent
        (protocol.md section 3, item 4).

        Raises:
            ChannelClosed: the socket closed before the agent answered.
            TimeoutError: no answer within ``timeout_s``.
            ProtocolViolation: the answer was not a valid handshake.
        """
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        channel = cls(reader, writer)
        try:
            await asyncio.wait_for(channel._handshake(flush=reconnect), timeout_s)
        except BaseException:
            await channel.aclose()
            raise
        return channel

    async def _handshake(self, *, flush: bool) -> None:
        hello = {"session": self._session, "protocol": PROTOCOL_VERSION}
        if flush:
            self._writer.write(bytes(HEADER_BYTES + MAX_PAYLOAD_BYTES))
        self._writer.write(encode(FrameType.HELLO, 0, json.dumps(hello).encode()))
        await self._writer.drain()
        reply = await self._hello
        if reply.protocol != PROTOCOL_VERSION:
            raise ProtocolViolation(f"agent speaks protocol {reply.protocol}")
        self.agent_version = reply.agent_version

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def aclose(self) -> None:
        """Close the connection; open streams fail with ChannelClosed. The guest keeps running."""
        self._shutdown(ChannelClosed("closed by the host"))
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ChannelError):
            await self._reader_task
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    # -- operations -------------------------------------------------------------------------

    async def call(self, op: str, model: type[_Model], **fields: Any) -> _Model:
        """Run a one-shot operation (protocol.md 5.1, 5.4, 5.5) and parse its reply.

        Raises:
            AgentError: the agent refused or failed the operation.
            ChannelClosed, ProtocolViolation: the channel broke.
        """
        stream = await self._open(op, {"op": op, **fields})
        try:
            return await stream.expect(model, FrameType.REPLY)
        finally:
            self._forget(stream)

    @contextlib.asynccontextmanager
    async def quiesced(self) -> AsyncIterator[None]:
        """Hold every request and data frame until the block ends, once a round trip has shown
        that the agent has read everything sent before it (protocol.md section 3, item 5).

        A VM saved inside the block has no half-read frame in its agent, so a restore of it
        needs no flush before its HELLO. A credit or cancel written meanwhile (they are not
        held) repeats the round trip.
        """
        async with self._send_lock:
            while True:
                written = self._frames_written
                stream = await self._open("version", {"op": "version"}, gated=False)
                try:
                    await stream.expect(Empty, FrameType.REPLY)
                finally:
                    self._forget(stream)
                if self._frames_written == written + 1:
                    break
            yield

    async def identity(self, request: IdentityRequest) -> IdentityReply:
        """Give the guest fresh entropy, the wall clock, a hostname and a machine-id (protocol.md
        5.1.1). Send it to a guest restored from a snapshot before anything else runs in it.

        The agent applies the steps in order (entropy, clock, hostname, machine_id); when one
        fails, the ones before it have taken effect, so retry the whole call or discard the VM.

        Example:
            await channel.identity(fresh_identity(hostname=sandbox_id))

        Raises:
            AgentError: ``bad_request`` for a field the agent refused; ``permission_denied`` or
                ``io_error`` for a step that failed, named in the message.
            ChannelClosed, ProtocolViolation: the channel broke.
        """
        stream = await self._open("identity", request.payload())
        try:
            return await stream.expect(IdentityReply, FrameType.REPLY)
        finally:
            self._forget(stream)

    async def list_dir(self, path: str) -> list[FileStat]:
        """A folder's entries sorted by name; large listings arrive in several frames."""
        stream = await self._open("list", {"op": "list", "path": path})
        entries: list[FileStat] = []
        try:
            while True:
                frame = await stream.next()
                if frame.type == FrameType.EVENT:
                    entries += stream.decode(frame, EntriesEvent, FrameType.EVENT).entries
                else:
                    entries += stream.decode(frame, Listing, FrameType.REPLY).entries
                    return entries
                if len(entries) > MAX_LISTING_ENTRIES:
                    raise ProtocolViolation(f"list: more than {MAX_LISTING_ENTRIES} entries")
        finally:
            self._forget(stream)

    async def exec(self, request: ExecRequest) -> Process:
        """Start a process (protocol.md 5.2) and return once the agent reports its pid.

        Raises:
            AgentError: it could not be started (``spawn_failed``, ``not_found``, ...).
            ChannelClosed, ProtocolViolation: the channel broke.
        """
        stream, start = await self._open_until(StartEvent, "exec", request.payload())
        return Process(stream, start.pid)

    async def attach(self, *, pid: int | None = None, tag: str | None = None) -> Process:
        """Attach to a process started earlier, perhaps by another session (protocol.md 5.3)."""
        fields = {"pid": pid} if pid is not None else {"tag": tag}
        stream, start = await self._open_until(StartEvent, "attach", {"op": "attach", **fields})
        return Process(stream, start.pid)

    async def open_shell(self, request: ShellRequest) -> ShellOpened:
        """Start a shell on a pseudo-terminal (protocol.md 5.6); it runs until it exits or is
        closed, attached or not.

        Raises:
            AgentError: it could not be started (``spawn_failed``, ``not_found``, ``busy``: the
                guest has ``MAX_SHELLS`` already, ...).
            ChannelClosed, ProtocolViolation: the channel broke.
        """
        stream = await self._open("shell_open", request.payload())
        try:
            return await stream.expect(ShellOpened, FrameType.REPLY)
        finally:
            self._forget(stream)

    async def attach_shell(
        self, shell_id: str, *, write: bool = False, scrollback: bool = True
    ) -> ShellAttachment:
        """Follow a shell's terminal: its scrollback (with ``scrollback``), then live output;
        with ``write`` this stream becomes the one writer."""
        request = {"op": "shell_attach", "id": shell_id, "write": write, "scrollback": scrollback}
        stream, start = await self._open_until(ShellStart, "shell_attach", request)
        return ShellAttachment(stream, shell_id, start)

    async def resize_shell(self, shell_id: str, *, cols: int, rows: int) -> None:
        await self.call("shell_resize", Empty, id=shell_id, cols=cols, rows=rows)

    async def signal_shell(
        self, shell_id: str, signum: int, *, target: Literal["foreground", "shell"] = "foreground"
    ) -> None:
        """Signal the terminal's foreground job (as a key would) or the shell's own group."""
        await self.call("shell_signal", Empty, id=shell_id, signal=signum, target=target)

    async def list_shells(self) -> list[ShellInfo]:
        return (await self.call("shell_list", ShellList)).shells

    async def close_shell(self, shell_id: str) -> None:
        """Hang the shell up (SIGKILL after 2 s) and forget it; attached streams end."""
        await self.call("shell_close", Empty, id=shell_id)

    async def connect_port(self, port: int, host: str = "127.0.0.1") -> Tunnel:
        """Open a TCP connection to ``host:port`` inside the guest (protocol.md 5.7); ``host``
        is the guest's loopback, ``127.0.0.1`` or ``::1``.

        Raises:
            AgentError: ``refused`` when nothing accepts the connection within 5 s;
                ``bad_request`` for a port out of range or a host that is not loopback.
            ChannelClosed, ProtocolViolation: the channel broke.
        """
        request = {"op": "connect", "port": port, "host": host}
        stream, _ = await self._open_until(Connected, "connect", request)
        return Tunnel(stream, port)

    async def read_file(
        self, path: str, *, offset: int = 0, length: int = -1
    ) -> tuple[StatEvent, AsyncIterator[bytes]]:
        """Stream a file out of the guest: its stat, then its bytes in chunks."""
        request = {"op": "read", "path": path, "offset": offset, "length": length}
        stream, stat = await self._open_until(StatEvent, "read", request)
        return stat, self._read_body(stream)

    async def _read_body(self, stream: _Stream) -> AsyncIterator[bytes]:
        try:
            while True:
                frame = await stream.next()
                if frame.type == FrameType.DATA:
                    yield frame.payload
                elif frame.type == FrameType.EOF:
                    await stream.expect(ByteCount, FrameType.REPLY)
                    return
                else:
                    raise ProtocolViolation(f"read: unexpected frame {frame.type}")
        finally:
            self._abandon(stream)

    async def write_file(
        self,
        path: str,
        content: bytes | AsyncIterable[bytes],
        *,
        mode: int = 0o644,
        append: bool = False,
        parents: bool = False,
    ) -> int:
        """Stream ``content`` into a file in the guest; returns the bytes written."""
        fields = {"op": "write", "path": path, "mode": mode, "append": append, "parents": parents}
        stream = await self._open("write", fields)
        try:
            try:
                if isinstance(content, bytes):
                    await self._send_data(stream, Channel.INPUT, content)
                else:
                    async for chunk in content:
                        await self._send_data(stream, Channel.INPUT, chunk)
                await self._send(FrameType.EOF, stream.id, flags=Channel.INPUT)
            except InputRefused:
                pass  # the agent answered before all input was sent; its answer says why
            return (await stream.expect(ByteCount, FrameType.REPLY)).bytes
        finally:
            self._abandon(stream)

    # -- streams ----------------------------------------------------------------------------

    async def _open(self, op: str, request: dict[str, Any], *, gated: bool = True) -> _Stream:
        self._check_open()
        payload = json.dumps(request).encode()
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"{op} request is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}"
            )
        stream = _Stream(self, self._next_id, op)
        self._next_id += 1
        self._streams[stream.id] = stream
        await self._send(FrameType.REQUEST, stream.id, payload, gated=gated)
        return stream

    async def _open_until(
        self, model: type[_Model], op: str, request: dict[str, Any]
    ) -> tuple[_Stream, _Model]:
        """Open a stream and wait for its first EVENT (start, stat); abandon it on failure."""
        stream = await self._open(op, request)
        try:
            return stream, await stream.expect(model, FrameType.EVENT)
        except BaseException:
            self._abandon(stream)
            raise

    def _forget(self, stream: _Stream) -> None:
        stream.done = True
        self._streams.pop(stream.id, None)

    def _abandon(self, stream: _Stream) -> None:
        """Forget a stream and, if the agent may still be working on it, tell it to stop."""
        was_open = not stream.done
        self._forget(stream)
        if was_open and self._closed is None:
            self._write(encode(FrameType.CANCEL, stream.id))

    def _write(self, frame: bytes) -> None:
        self._frames_written += 1
        self._writer.write(frame)

    async def _send(
        self,
        frame_type: FrameType,
        stream_id: int,
        payload: bytes = b"",
        flags: int = 0,
        *,
        gated: bool = True,
    ) -> None:
        self._check_open()
        try:
            if gated:
                async with self._send_lock:
                    self._write(encode(frame_type, stream_id, payload, flags))
                    await self._writer.drain()
            else:
                self._write(encode(frame_type, stream_id, payload, flags))
                await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._shutdown(ChannelClosed(f"write failed: {exc}"))
            raise self._closed from exc  # type: ignore[misc]

    async def _send_data(self, stream: _Stream, channel: Channel, data: bytes) -> None:
        view = memoryview(data)
        while view:
            while stream.send_credit <= 0 or stream.done:
                if stream.error is not None:
                    raise stream.error
                if stream.done:
                    raise InputRefused(stream.op)
                stream.credit_changed.clear()
                await stream.credit_changed.wait()
            size = min(len(view), DATA_CHUNK_BYTES, stream.send_credit)
            stream.send_credit -= size
            await self._send(FrameType.DATA, stream.id, bytes(view[:size]), flags=channel)
            view = view[size:]

    def _consumed(self, stream: _Stream, size: int) -> None:
        stream.recv_to_grant += size
        if stream.recv_to_grant < INITIAL_WINDOW_BYTES // 2 or stream.done or self._closed:
            return
        grant, stream.recv_to_grant = stream.recv_to_grant, 0
        stream.recv_in_flight -= grant
        self._write(encode(FrameType.CREDIT, stream.id, _CREDIT.pack(grant)))

    # -- the reader -------------------------------------------------------------------------

    async def _bg_read(self) -> None:
        try:
            while True:
                data = await self._reader.read(READ_CHUNK_BYTES)
                if not data:
                    raise ChannelClosed("the agent socket closed (the VM stopped?)")
                try:
                    frames = self._decoder.feed(data)
                except FramingError as exc:
                    raise ProtocolViolation(str(exc)) from exc
                for frame in frames:
                    self._route(frame)
        except ChannelError as exc:
            self._shutdown(exc if isinstance(exc, ChannelClosed) else ChannelClosed(str(exc)))
        except (ConnectionError, OSError) as exc:
            self._shutdown(ChannelClosed(f"read failed: {exc}"))

    def _route(self, frame: Frame) -> None:
        if not self._hello.done():
            self._handshake_frame(frame)
            return
        stream = self._streams.get(frame.stream)
        if stream is None or stream.done:
            return
        if frame.type == FrameType.CREDIT:
            self._credit(stream, frame)
        elif frame.type == FrameType.DATA:
            stream.recv_in_flight += len(frame.payload)
            if stream.recv_in_flight > INITIAL_WINDOW_BYTES:
                self._violate(stream, "sent DATA beyond its credit")
                return
            self._enqueue(stream, frame)
        elif frame.type in (FrameType.REPLY, FrameType.EVENT, FrameType.ERROR, FrameType.EOF):
            stream.control_frames += 1
            stream.control_bytes += len(frame.payload)
            if (
                stream.control_frames > MAX_QUEUED_CONTROL_FRAMES
                or stream.control_bytes > MAX_QUEUED_CONTROL_BYTES
            ):
                self._violate(stream, "flooded the stream with control frames")
                return
            self._enqueue(stream, frame)
            if frame.type in (FrameType.REPLY, FrameType.ERROR):
                stream.done = True
                stream.credit_changed.set()  # a sender waiting for credit must learn it ended

    def _enqueue(self, stream: _Stream, frame: Frame) -> None:
        self._queued_bytes += len(frame.payload)
        if self._queued_bytes > MAX_QUEUED_BYTES:
            raise ProtocolViolation(f"more than {MAX_QUEUED_BYTES} bytes queued unread")
        stream.inbox.put_nowait(frame)

    def _handshake_frame(self, frame: Frame) -> None:
        if frame.type != FrameType.REPLY or frame.stream != 0:
            return
        try:
            reply = HelloReply.model_validate_json(frame.payload)
        except ValidationError:
            return
        if reply.session == self._session:
            self._decoder.strict = True
            self._hello.set_result(reply)

    def _credit(self, stream: _Stream, frame: Frame) -> None:
        if len(frame.payload) != _CREDIT.size:
            self._violate(stream, "sent a malformed CREDIT frame")
            return
        (grant,) = _CREDIT.unpack(frame.payload)
        stream.send_credit += grant
        if stream.send_credit > INITIAL_WINDOW_BYTES:
            self._violate(stream, "granted more credit than one window")
            return
        stream.credit_changed.set()

    def _violate(self, stream: _Stream, what: str) -> None:
        log.warning("agent stream %d (%s) %s; dropping it", stream.id, stream.op, what)
        stream.fail(ProtocolViolation(f"{stream.op}: the agent {what}"))
        self._streams.pop(stream.id, None)
        with contextlib.suppress(OSError):
            self._write(encode(FrameType.CANCEL, stream.id))

    def _shutdown(self, error: ChannelClosed) -> None:
        if self._closed is not None:
            return
        self._closed = error
        if not self._hello.done():
            self._hello.set_exception(error)
            self._hello.exception()  # mark retrieved: a failed connect raises it elsewhere
        for stream in self._streams.values():
            stream.fail(error)
        self._streams.clear()
        self._writer.close()

    def _check_open(self) -> None:
        if self._closed is not None:
            raise self._closed


class Process:
    """A process started through the agent, and the stream carrying its output."""

    def __init__(self, stream: _Stream, pid: int) -> None:
        self._stream = stream
        self.pid = pid
        self._end: ExecEnd | None = None
        # Called once with the end, by whichever reader sees it (the audit log's exec.end);
        # a process detached before its end never calls it.
        self.on_end: Callable[[ExecEnd], None] | None = None

    async def output(self) -> AsyncIterator[Output]:
        """Yield output as it arrives, until the process has ended and its pipes are drained."""
        stream = self._stream
        while self._end is None:
            frame = await stream.next()
            if frame.type == FrameType.DATA:
                if frame.flags not in (Channel.STDOUT, Channel.STDERR):
                    raise ProtocolViolation(f"exec output on channel {frame.flags}")
                yield Output(Channel(frame.flags), frame.payload)
            elif frame.type in (FrameType.REPLY, FrameType.ERROR):
                stream.channel._forget(stream)
                self._end = stream.decode(frame, ExecEnd, FrameType.REPLY)
                if self.on_end is not None:
                    self.on_end(self._end)
            elif frame.type != FrameType.EOF:
                raise ProtocolViolation(f"exec: unexpected frame {frame.type}")

    async def wait(self) -> ExecEnd:
        """Wait for the end, discarding output not read yet."""
        async for _ in self.output():
            pass
        assert self._end is not None
        return self._end

    async def write_stdin(self, data: bytes) -> None:
        """Send bytes to the process's stdin (it must have been started with ``stdin=True``)."""
        await self._stream.channel._send_data(self._stream, Channel.INPUT, data)

    async def close_stdin(self) -> None:
        await self._stream.channel._send(FrameType.EOF, self._stream.id, flags=Channel.INPUT)

    async def signal(self, signum: int) -> None:
        """Send a signal to the process group."""
        await self._stream.channel.call("signal", Empty, pid=self.pid, signal=signum)

    def detach(self) -> None:
        """Stop following the process; it keeps running and can be attached again."""
        if self._end is None:
            self._stream.channel._abandon(self._stream)


def _parse(model: type[_Model], payload: bytes, op: str) -> _Model:
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise ProtocolViolation(
            f"{op}: invalid {model.__name__}: {exc.errors()[0]['msg']}"
        ) from exc
