"""The ClientHello reader: real OpenSSL hellos parse; everything malformed is a ClientHelloError."""

from __future__ import annotations

import asyncio

import pytest
from isorun_hostd.proxy.sni import (
    ClientHello,
    ClientHelloError,
    normalize_hostname,
    parse_server_name,
    read_client_hello,
)
from proxy_support import client_hello


async def _read(data: bytes, max_bytes: int = 16 * 1024) -> ClientHello:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await read_client_hello(reader, max_bytes)


async def test_a_real_hello_gives_its_server_name_and_every_byte() -> None:
    raw = client_hello("API.Example.com")
    hello = await _read(raw)
    assert hello.server_name == "api.example.com"
    assert hello.raw == raw


async def test_a_hello_split_over_two_records_is_reassembled() -> None:
    raw = client_hello("example.com")
    fragment = raw[5:]
    split = [fragment[:10], fragment[10:]]
    records = b"".join(raw[:3] + len(part).to_bytes(2) + part for part in split)
    hello = await _read(records)
    assert hello.server_name == "example.com"
    assert hello.raw == records


async def test_no_server_name_is_refused() -> None:
    with pytest.raises(ClientHelloError, match="server_name"):
        await _read(client_hello(None))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not a TLS handshake record"),
        (b"\x16\x03\x01\x00\x00", "out of range"),
        (b"\x16\x03\x01\x40\x01" + b"\x00" * 16385, "out of range"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not a ClientHello"),
        (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", "exceeds"),
    ],
)
async def test_garbage_records_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ClientHelloError, match=reason):
        await _read(data)


async def test_a_truncated_hello_is_an_incomplete_read() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await _read(client_hello("example.com")[:-7])


def test_every_truncation_of_the_body_is_a_clean_error() -> None:
    body = client_hello("example.com")[9:]
    assert parse_server_name(body) == "example.com"
    for cut in range(len(body)):
        with pytest.raises(ClientHelloError):
            parse_server_name(body[:cut])


def test_lengths_that_overrun_their_container_are_refused() -> None:
    body = bytearray(client_hello("example.com")[9:])
    session_id_length = 34
    body[session_id_length] = 33
    with pytest.raises(ClientHelloError, match="session_id"):
        parse_server_name(bytes(body))
    body[session_id_length] = 0xFF
    with pytest.raises(ClientHelloError):
        parse_server_name(bytes(body))


def _hello_with_names(*entries: bytes, copies: int = 1) -> bytes:
    names = b"".join(entries)
    server_name = len(names).to_bytes(2) + names
    extension = b"\x00\x00" + len(server_name).to_bytes(2) + server_name
    extensions = extension * copies
    # version, random, empty session_id, one cipher suite, the null compression method
    prefix = b"\x03\x03" + b"\x00" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    return prefix + len(extensions).to_bytes(2) + extensions


def _name(text: bytes, name_type: int = 0) -> bytes:
    return bytes([name_type]) + len(text).to_bytes(2) + text


def test_handmade_hellos() -> None:
    assert parse_server_name(_hello_with_names(_name(b"a.example"))) == "a.example"
    # Another name type is skipped, as RFC 6066 allows for future types.
    assert parse_server_name(_hello_with_names(_name(b"x", 7), _name(b"b.example"))) == "b.example"
    with pytest.raises(ClientHelloError, match="more than one"):
        parse_server_name(_hello_with_names(_name(b"a.example"), _name(b"b.example")))
    for bad in (b"10.0.0.1", b"a..b", b"-a.example", b"a b", b"\xc3\xa9.example", b""):
        with pytest.raises(ClientHelloError):
            parse_server_name(_hello_with_names(_name(bad)))
    with pytest.raises(ClientHelloError, match="twice"):
        parse_server_name(_hello_with_names(_name(b"a.example"), copies=2))


def test_normalize_hostname() -> None:
    assert normalize_hostname("Example.COM.") == "example.com"
    assert normalize_hostname("a_b.example") == "a_b.example"
    assert normalize_hostname("127.0.0.1") is None
    assert normalize_hostname("a" * 64 + ".example") is None
    assert normalize_hostname("a.b" * 100) is None
