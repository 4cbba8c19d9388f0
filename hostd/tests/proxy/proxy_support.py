"""Loopback doubles for the egress gateway's tests: a test PKI, upstreams and sandboxes.

Everything listens on 127.0.0.0/8 only. A "sandbox" is a client socket bound to its own source
address (127.0.0.2, ...), which ``Sandboxes`` maps to a ``Peer``; names resolve through a dict
to loopback (address, port) pairs, so no query and no packet leaves the machine.

    guest (127.0.0.2) --> gateway (127.0.0.1, ephemeral ports) --> Upstream (127.0.0.3, TLS
                                                                   with the test PKI's cert)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import h11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from isorun_hostd.net.peers import Peer
from isorun_hostd.net.policy import CompiledPolicy
from isorun_hostd.net.spec import SecretSpec
from isorun_hostd.proxy.ca import CertificateAuthority
from isorun_hostd.proxy.server import EgressGateway

GUEST = "127.0.0.2"
UPSTREAM_ADDRESS = "127.0.0.3"
SPLICE_ADDRESS = "127.0.0.4"
UPSTREAM_HOST = "api.upstream.test"
ALLOWED_HOST = "allowed.test"


class FakePKI:
    """A CA of the tests' own, standing in for the public web PKI the upstreams use."""

    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "isorun test PKI")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), False)
            .sign(self.key, hashes.SHA256())
        )
        self.directory = directory

    def client_context(self) -> ssl.SSLContext:
        """Trusts this PKI only: the gateway's upstream_ssl, a client of a spliced server."""
        return ssl.create_default_context(
            cadata=self.cert.public_bytes(serialization.Encoding.PEM).decode()
        )

    def server_context(self, host: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False
            )
            .sign(self.key, hashes.SHA256())
        )
        pem = self.directory / f"{host}.pem"
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            + cert.public_bytes(serialization.Encoding.PEM)
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pem)
        return context


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    """An HTTP/1.1 server that records what it receives.

    ``/.../sse`` streams three events: the first at once, the last only after ``sse_gate`` is
    set (or 3 s), recording when it sent that last one. Any other path answers JSON echoing the
    request. ``connections`` counts accepted connections.
    """

    server: asyncio.Server | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    sse_gate: asyncio.Event = field(default_factory=asyncio.Event)
    sse_last_sent_at: float | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)

        async def send(event: h11.Event) -> None:
            data = conn.send(event)
            if data:
                writer.write(data)
                await writer.drain()

        try:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                assert request is not None
                seen = Seen(
                    request.method.decode(),
                    request.target.decode(),
                    {k.decode(): v.decode() for k, v in request.headers},
                    body,
                )
                self.seen.append(seen)
                if seen.target.endswith("/sse"):
                    await self._sse(send)
                else:
                    payload = json.dumps({"target": seen.target, "headers": seen.headers}).encode()
                    await send(
                        h11.Response(
                            status_code=200,
                            headers=[
                                ("content-type", "application/json"),
                                ("content-length", str(len(payload))),
                            ],
                        )
                    )
                    await send(h11.Data(data=payload))
                    await send(h11.EndOfMessage())
                if conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (OSError, h11.ProtocolError, ssl.SSLError, asyncio.CancelledError):
            # Cancelled at loop teardown: end quietly, or asyncio logs an error (3.11).
            return
        finally:
            writer.close()

    async def _sse(self, emit: Callable[[h11.Event], Awaitable[None]]) -> None:
        await emit(h11.Response(status_code=200, headers=[("content-type", "text/event-stream")]))
        await emit(h11.Data(data=b"data: first\n\n"))
        await emit(h11.Data(data=b"data: second\n\n"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sse_gate.wait(), 3)
        self.sse_last_sent_at = asyncio.get_running_loop().time()
        await emit(h11.Data(data=b"data: last\n\n"))
        await emit(h11.EndOfMessage())


@dataclass
class StandInPolicy:
    """The two questions the gateway asks of a policy, answered from sets; ``closed`` holds
    the addresses no resolved name may reach (like NEVER_OPEN)."""

    names: set[str]
    closed: set[str] = field(default_factory=lambda: {"127.0.0.1", "169.254.169.254"})

    def allows_name(self, name: str) -> bool:
        return name in self.names

    def allows_address(self, ip: str) -> bool:
        return False

    def admits(self, ip: str) -> bool:
        return ip not in self.closed


class AuditLog:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, object]]] = []

    def __call__(self, sandbox_id: str, kind: str, fields: Mapping[str, object]) -> None:
        self.entries.append((sandbox_id, kind, dict(fields)))

    def kinds(self, kind: str) -> list[dict[str, object]]:
        return [fields for _, k, fields in self.entries if k == kind]


async def _no_admit(addresses: Sequence[str], ttl_s: int) -> None:
    raise AssertionError("the gateway never opens nftables sets")


def make_peer(
    policy: object, secrets: Sequence[SecretSpec] = (), sandbox_id: str = "sbx-1"
) -> Peer:
    return Peer(sandbox_id, cast(CompiledPolicy, policy), tuple(secrets), _no_admit)


@dataclass
class World:
    """One gateway with its upstreams, its sandboxes and its audit log."""

    gateway: EgressGateway
    ca: CertificateAuthority
    pki: FakePKI
    upstream: Upstream
    audit: AuditLog
    peers: dict[str, Peer]
    names: dict[str, tuple[str, int]]

    def secret(self, name: str = "OPENAI_API_KEY", path: str = "/v1", **kwargs: str) -> SecretSpec:
        return SecretSpec(
            name=name, value=f"real-{name}", upstream=f"https://{UPSTREAM_HOST}{path}", **kwargs
        )


def client_hello(server_name: str | None) -> bytes:
    """The ClientHello OpenSSL sends for ``server_name`` (None: without the SNI extension)."""
    context = ssl.create_default_context()
    if server_name is None:
        context.check_hostname = False
    tls = context.wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=server_name
    )
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()
