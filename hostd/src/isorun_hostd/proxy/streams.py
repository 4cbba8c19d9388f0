"""The byte streams the egress gateway moves data over: TCP, TLS it terminates, and splicing.

``TlsStream`` runs the server side of TLS over memory BIOs instead of ``start_tls``: the
gateway has already read the ClientHello off the socket to learn the SNI, and a BIO lets it
feed those bytes to the handshake first.

``splice`` copies both ways until both sides have closed their half. Each copy waits for the
receiver to drain before reading more (backpressure), forwards a half-close as a TCP FIN, and
the pair ends when nothing moved either way for ``idle_timeout_s``::

    guest --read--> drain --write--> upstream      (EOF -> shutdown(SHUT_WR) on upstream)
    guest <--write-- drain <--read-- upstream      (EOF -> shutdown(SHUT_WR) on guest)
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Protocol

CHUNK_BYTES = 64 * 1024


class ByteStream(Protocol):
    """What the gateway's HTTP handling reads from and writes to."""

    async def receive(self, max_bytes: int = CHUNK_BYTES) -> bytes:
        """Up to ``max_bytes``; ``b""`` once the other side has closed."""
        ...

    async def send(self, data: bytes) -> None:
        """Write and wait until the transport has room again."""
        ...

    async def aclose(self) -> None: ...


class TcpStream:
    """An asyncio stream pair as a ``ByteStream`` that can also half-close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def receive(self, max_bytes: int = CHUNK_BYTES) -> bytes:
        return await self.reader.read(max_bytes)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_eof(self) -> None:
        if self.writer.can_write_eof() and not self.writer.is_closing():
            self.writer.write_eof()

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


class TlsStream:
    """The server side of TLS over a ``TcpStream``, the handshake fed ``initial`` bytes first."""

    def __init__(self, tcp: TcpStream, context: ssl.SSLContext) -> None:
        self._tcp = tcp
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    @classmethod
    async def accept(cls, tcp: TcpStream, context: ssl.SSLContext, initial: bytes) -> TlsStream:
        """Complete the handshake; the caller bounds its time.

        Raises:
            ssl.SSLError: the guest's handshake failed (e.g. it does not trust the CA).
            ConnectionError: the guest closed during the handshake.
        """
        stream = cls(tcp, context)
        stream._incoming.write(initial)
        while True:
            try:
                stream._tls.do_handshake()
            except ssl.SSLWantReadError:
                await stream._flush()
                await stream._fill()
                continue
            await stream._flush()
            return stream

    async def receive(self, max_bytes: int = CHUNK_BYTES) -> bytes:
        while True:
            # With nothing buffered either side of the TLS object, a read could only fail.
            if self._incoming.pending or self._tls.pending():
                try:
                    return self._tls.read(max_bytes)
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    # A guest that closes without close_notify only truncates its own request,
                    # which the HTTP framing above notices.
                    return b""
            await self._flush()
            try:
                await self._fill()
            except ConnectionError:
                return b""

    async def send(self, data: bytes) -> None:
        self._tls.write(data)
        await self._flush()

    async def aclose(self) -> None:
        # unwrap queues our close_notify, then wants the guest's, which is not waited for.
        with contextlib.suppress(ssl.SSLError):
            self._tls.unwrap()
        with contextlib.suppress(OSError):
            await self._flush()
        await self._tcp.aclose()

    async def _fill(self) -> None:
        data = await self._tcp.receive()
        if not data:
            raise ConnectionError("the guest closed the connection during TLS")
        self._incoming.write(data)

    async def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            await self._tcp.send(pending)


class IdleTimeout(Exception):
    """nothing moved either way for {idle_timeout_s} s"""


async def splice(a: TcpStream, b: TcpStream, idle_timeout_s: float) -> None:
    """Copy ``a`` <-> ``b`` until both directions have ended; the caller closes both.

    Raises:
        IdleTimeout: nothing moved for ``idle_timeout_s``.
        OSError: a side reset or failed.
    """
    loop = asyncio.get_running_loop()
    last_moved = [loop.time()]

    async def pump(source: TcpStream, sink: TcpStream) -> None:
        while True:
            try:
                async with asyncio.timeout(idle_timeout_s):
                    data = await source.receive()
            except TimeoutError:
                # This direction is quiet; the pair is idle only if the other one is too.
                if loop.time() - last_moved[0] >= idle_timeout_s:
                    raise IdleTimeout(f"nothing moved either way for {idle_timeout_s} s") from None
                continue
            if not data:
                await sink.send_eof()
                return
            last_moved[0] = loop.time()
            try:
                async with asyncio.timeout(idle_timeout_s):
                    await sink.send(data)
            except TimeoutError:
                raise IdleTimeout(f"the receiver took no data for {idle_timeout_s} s") from None

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(pump(a, b))
            group.create_task(pump(b, a))
    except* (IdleTimeout, OSError) as failed:
        raise failed.exceptions[0] from None
