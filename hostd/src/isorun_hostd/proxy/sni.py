"""Reading a TLS ClientHello off the wire to learn its server name, without terminating TLS.

The gateway needs the name before it decides anything, and must be able to replay the exact
bytes to the real server afterwards. Everything here is bounds-checked: the bytes come from a
hostile guest. The layout (RFC 8446 §5.1 and §4.1.2, RFC 6066 §3)::

    record      type=0x16 (handshake) | version u16 (0x03xx) | length u16 (<= 2^14) | fragment
    handshake   type=0x01 (ClientHello) | length u24 | body        (may span several records)
    body        legacy_version u16 | random[32] | session_id <0..32>  (u8 length)
                | cipher_suites <2..2^16-2> (u16 length) | compression_methods <1..2^8-1> (u8)
                | extensions <8..2^16-1> (u16 length)
    extension   type u16 | data <0..2^16-1> (u16 length)
    server_name (type 0)  server_name_list <1..2^16-1> (u16): name_type u8 (0 = host_name)
                | host_name <1..2^16-1> (u16)

No server name, a duplicate extension or name type, an IP literal as the name, or anything
malformed is a ``ClientHelloError``: the gateway refuses instead of guessing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass

RECORD_HEADER_BYTES = 5
RECORD_MAX_FRAGMENT_BYTES = 2**14
HANDSHAKE_HEADER_BYTES = 4
CONTENT_TYPE_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
EXTENSION_SERVER_NAME = 0x0000
NAME_TYPE_HOST_NAME = 0x00
HOSTNAME_MAX_CHARS = 253
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


class ClientHelloError(Exception):
    """not a usable TLS ClientHello: {reason}"""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not a usable TLS ClientHello: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ClientHello:
    """``raw``: every byte read, to replay upstream; ``server_name``: the normalized SNI."""

    raw: bytes
    server_name: str


def normalize_hostname(text: str) -> str | None:
    """``text`` as a lower-case DNS name without a trailing dot, or None when it is not one
    (an IP literal, a non-ASCII name, an empty or over-long label, stray characters)."""
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > HOSTNAME_MAX_CHARS or not name.isascii():
        return None
    if not all(_LABEL.match(label) for label in name.split(".")):
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None


async def read_client_hello(reader: asyncio.StreamReader, max_bytes: int) -> ClientHello:
    """Read whole TLS records until the ClientHello in them is complete, and parse it.

    The caller bounds the time (``asyncio.timeout``); ``max_bytes`` bounds the handshake
    message, so a guest cannot make the gateway buffer more.

    Raises:
        ClientHelloError: not TLS, too large, malformed, or without a server name.
        asyncio.IncompleteReadError: the guest closed before the ClientHello was complete.
    """
    raw = bytearray()
    handshake = bytearray()
    wanted: int | None = None
    while wanted is None or len(handshake) < wanted:
        header = await reader.readexactly(RECORD_HEADER_BYTES)
        content_type, major, length = header[0], header[1], int.from_bytes(header[3:5])
        if content_type != CONTENT_TYPE_HANDSHAKE or major != 3:
            raise ClientHelloError("the first record is not a TLS handshake record")
        if not 0 < length <= RECORD_MAX_FRAGMENT_BYTES:
            raise ClientHelloError(f"record length {length} is out of range")
        fragment = await reader.readexactly(length)
        raw += header + fragment
        handshake += fragment
        if wanted is None and len(handshake) >= HANDSHAKE_HEADER_BYTES:
            if handshake[0] != HANDSHAKE_CLIENT_HELLO:
                raise ClientHelloError("the first handshake message is not a ClientHello")
            wanted = HANDSHAKE_HEADER_BYTES + int.from_bytes(handshake[1:4])
            if wanted > max_bytes:
                raise ClientHelloError(f"ClientHello of {wanted} bytes exceeds {max_bytes}")
        if len(raw) > max_bytes + RECORD_HEADER_BYTES * 4:
            raise ClientHelloError(f"more than {max_bytes} bytes without a whole ClientHello")
    # Bytes after the ClientHello in the last record would be a second handshake message,
    # which a client never sends before the server answers.
    if len(handshake) != wanted:
        raise ClientHelloError("trailing bytes after the ClientHello")
    return ClientHello(bytes(raw), parse_server_name(bytes(handshake[HANDSHAKE_HEADER_BYTES:])))


class _Cursor:
    """Reads big-endian fields from a byte string, refusing to run past its end."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def left(self) -> int:
        return len(self._data) - self._at

    def take(self, count: int, what: str) -> bytes:
        if count > self.left:
            raise ClientHelloError(f"{what} runs past the end of its container")
        chunk = self._data[self._at : self._at + count]
        self._at += count
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what))

    def vector(self, length_size: int, what: str) -> _Cursor:
        return _Cursor(self.take(self.uint(length_size, f"{what} length"), what))


def parse_server_name(body: bytes) -> str:
    """The host_name in a ClientHello body (the handshake message without its 4-byte header).

    Raises:
        ClientHelloError: malformed, or no single valid host_name.
    """
    hello = _Cursor(body)
    hello.take(2 + 32, "legacy_version and random")
    if hello.vector(1, "session_id").left > 32:
        raise ClientHelloError("session_id is longer than 32 bytes")
    hello.vector(2, "cipher_suites")
    hello.vector(1, "compression_methods")
    if hello.left == 0:
        raise ClientHelloError("no extensions, so no server name")
    extensions = hello.vector(2, "extensions")
    if hello.left:
        raise ClientHelloError("bytes after the extensions")
    seen: set[int] = set()
    server_name: str | None = None
    while extensions.left:
        kind = extensions.uint(2, "extension type")
        data = extensions.vector(2, "extension data")
        if kind in seen:
            raise ClientHelloError(f"extension {kind} appears twice")
        seen.add(kind)
        if kind == EXTENSION_SERVER_NAME:
            server_name = _host_name(data)
    if server_name is None:
        raise ClientHelloError("no server_name extension")
    return server_name


def _host_name(extension: _Cursor) -> str:
    names = extension.vector(2, "server_name_list")
    if extension.left:
        raise ClientHelloError("bytes after the server_name_list")
    found: str | None = None
    while names.left:
        name_type = names.uint(1, "name_type")
        entry = names.vector(2, "host_name")
        if name_type != NAME_TYPE_HOST_NAME:
            continue
        if found is not None:
            raise ClientHelloError("more than one host_name")
        raw = entry.take(entry.left, "host_name")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ClientHelloError("host_name is not ASCII") from None
        found = normalize_hostname(text)
        if found is None:
            raise ClientHelloError(f"host_name {text!r} is not a DNS name")
    if found is None:
        raise ClientHelloError("server_name carries no host_name")
    return found
