"""A one-request HTTP/3 client, so tests can check the edge's QUIC listener end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent


@dataclass
class H3Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    """The response headers (then any trailers), without pseudo-headers."""
    body: bytes


class _Client(QuicConnectionProtocol):
    def __init__(self, quic: QuicConnection, stream_handler: QuicStreamHandler | None = None):
        super().__init__(quic, stream_handler)
        self.h3 = H3Connection(quic)
        self.stream_id = quic.get_next_available_stream_id()
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.done: asyncio.Future[None] = self._loop.create_future()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated) and not self.done.done():
            reason = f"{event.error_code:#x} {event.reason_phrase}".strip()
            self.done.set_exception(ConnectionError(f"QUIC connection closed: {reason}"))
        for h3_event in self.h3.handle_event(event):
            if getattr(h3_event, "stream_id", None) != self.stream_id:
                continue
            if isinstance(h3_event, HeadersReceived):
                if any(name == b":status" for name, _ in h3_event.headers):
                    self.headers = []  # a final response replaces any 1xx before it
                self.headers += h3_event.headers
            elif isinstance(h3_event, DataReceived):
                self.body += h3_event.data
            else:
                continue
            if h3_event.stream_ended and not self.done.done():
                self.done.set_result(None)

    async def wait_closed(self) -> None:
        # connect() waits out QUIC's closing period (3 PTOs) on exit, which could overrun the
        # caller's timeout; the CONNECTION_CLOSE frame has already been sent by then.
        self.done.cancel()  # so a late ConnectionTerminated isn't logged as unretrieved


async def h3_request(
    address: tuple[str, int],
    authority: str,
    path: str,
    *,
    cafile: Path,
    method: str = "GET",
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    timeout_s: float = 10.0,
) -> H3Response:
    """Send one request over a fresh QUIC connection to ``address``; TimeoutError past timeout_s.

    ``authority`` is sent as ``:authority`` and its host part as the TLS server name, so the
    packets can go to a loopback address while naming a virtual host.
    """
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.server_name = urlsplit(f"//{authority}").hostname
    config.load_verify_locations(cafile=str(cafile))
    request = [
        (b":method", method.encode()),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
        *headers,
    ]
    async with asyncio.timeout(timeout_s):
        # Not waiting for the handshake lets a TLS failure surface through `done` with its reason.
        async with connect(
            *address, configuration=config, create_protocol=_Client, wait_connected=False
        ) as proto:
            assert isinstance(proto, _Client)
            proto.h3.send_headers(proto.stream_id, request, end_stream=not body)
            if body:
                proto.h3.send_data(proto.stream_id, body, end_stream=True)
            proto.transmit()
            await proto.done
    plain = [h for h in proto.headers if not h[0].startswith(b":")]
    return H3Response(int(dict(proto.headers)[b":status"]), plain, proto.body)
