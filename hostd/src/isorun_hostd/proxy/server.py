"""The egress gateway: where every sandbox's TCP to ports 80 and 443 lands, and what it does.

Each sandbox namespace DNATs the guest's TCP to port 80 and 443 (any destination, 10.0.0.1
included) to one gateway in the host namespace and SNATs it to the sandbox's transit address,
so the source address names the sandbox (``PeerLookup``). The address the guest dialed is never
used: the gateway resolves names itself, host-side.

    TLS listener (guest :443)
      read the ClientHello (bounded bytes and time), take its SNI; no SNI -> close
      SNI is a secret's upstream host   -> terminate TLS with a leaf from the isorun CA, then
                                           serve HTTP/1.1 as the credential proxy (transparent)
      policy.allows_name(SNI)           -> resolve host-side, keep the addresses
                                           policy.admits, connect, replay the ClientHello, splice
      otherwise                         -> close; egress.deny
    HTTP listener (guest :80)
      read the request head (bounded bytes and time)
      Host is 10.0.0.1                  -> the credential proxy (explicit): /s/<NAME>/... ->
                                           the secret's upstream over verified HTTPS, streamed
      Host allowed by policy            -> resolve host-side (an IPv4 Host: allows_address),
                                           connect :80, replay the bytes read, splice
      otherwise                         -> 403; egress.deny

Audit kinds: ``egress.connect`` {name, port} for each spliced connection, ``egress.deny``
{name, port, reason} for each refusal that had a sandbox behind it, ``credential.inject``
{secret, host, method, path} for each request that got a real header (never the value, never
the query). A refusal closes the connection; every path out of a handler closes both sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import h11
import httpcore
import httpx

from isorun_hostd.net.peers import AuditSink, Peer, PeerLookup, null_audit
from isorun_hostd.net.spec import HOST_ADDRESS
from isorun_hostd.proxy.ca import CertificateAuthority
from isorun_hostd.proxy.credentials import (
    RouteError,
    UpstreamRequest,
    inject_audit_fields,
    route_explicit,
    route_transparent,
    secrets_for_host,
    upstream_headers,
    without_hop_by_hop,
)
from isorun_hostd.proxy.sni import ClientHelloError, normalize_hostname, read_client_hello
from isorun_hostd.proxy.streams import ByteStream, IdleTimeout, TcpStream, TlsStream, splice

logger = logging.getLogger(__name__)

HTTP_PORT = 80
HTTPS_PORT = 443
# How long an idle connection to a credential upstream is kept for the next request.
UPSTREAM_KEEPALIVE_S = 5.0

Resolver = Callable[[str, int], Awaitable[Sequence[tuple[str, int]]]]
"""(host, port) -> the (address, port) pairs to try, resolved on the host, like getaddrinfo's
socket addresses. Raises OSError when the name does not resolve."""


async def system_resolver(host: str, port: int) -> list[tuple[str, int]]:
    """The host's resolver (``getaddrinfo``), IPv4 addresses first, each address once."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    ordered = sorted(infos, key=lambda info: info[0] != socket.AF_INET)
    return list(dict.fromkeys((str(info[4][0]), int(info[4][1])) for info in ordered))


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """Bounds on what one guest connection can make the gateway hold or wait for."""

    max_connections: int = 4096
    max_connections_per_sandbox: int = 256
    max_head_bytes: int = 16 * 1024
    max_client_hello_bytes: int = 16 * 1024
    head_timeout_s: float = 10.0
    resolve_timeout_s: float = 5.0
    connect_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0


@dataclass(slots=True)
class GatewayCounters:
    """Since start: connections accepted, refusals, real headers injected, spliced connections,
    upstreams that failed; ``active`` is the connections open now."""

    connections: int = 0
    denies: int = 0
    injections: int = 0
    egress_connects: int = 0
    upstream_errors: int = 0
    active: int = 0
    active_by_sandbox: dict[str, int] = field(default_factory=dict)


class _Refused(Exception):
    """Ends a guest connection with an HTTP status (or a plain close on the TLS listener)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class EgressGateway:
    """The two listeners every sandbox's port 80 and 443 traffic is DNATed to.

    Args:
        peers: source address -> the sandbox behind it (``None``: close at once).
        ca: signs the certificates transparent mode presents to the guest.
        host: the address both listeners bind (the DNAT target).
        http_port, tls_port: 0 picks a free port (tests); see the properties after ``start``.
        audit: where ``egress.*`` and ``credential.inject`` entries go.
        resolver: host-side name resolution (tests map names to loopback addresses).
        upstream_ssl: verifies credential upstreams; default: the system's trust store.
        proxy_address: the gateway's address as the guest sees it (10.0.0.1).
        limits: see ``GatewayLimits``.

    Example::

        gateway = EgressGateway(registry.peer, ca, host="10.200.0.1", http_port=8080,
                                tls_port=8443, audit=audit_log.record)
        await gateway.start()
        ...
        await gateway.aclose()
    """

    def __init__(
        self,
        peers: PeerLookup,
        ca: CertificateAuthority,
        *,
        host: str,
        http_port: int = 0,
        tls_port: int = 0,
        audit: AuditSink = null_audit,
        resolver: Resolver = system_resolver,
        upstream_ssl: ssl.SSLContext | None = None,
        proxy_address: str = HOST_ADDRESS,
        limits: GatewayLimits | None = None,
    ) -> None:
        self._peers = peers
        self._ca = ca
        self._host = host
        self._ports = (http_port, tls_port)
        self._audit_sink = audit
        self._resolver = resolver
        self._upstream_ssl = upstream_ssl or ssl.create_default_context()
        self._proxy_address = proxy_address
        self.limits = limits or GatewayLimits()
        self.counters = GatewayCounters()
        self._servers: list[asyncio.Server] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    @property
    def http_port(self) -> int:
        """The HTTP listener's port (after ``start``)."""
        return int(self._servers[0].sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int:
        """The TLS listener's port (after ``start``)."""
        return int(self._servers[1].sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind both listeners and start accepting.

        Raises:
            OSError: a port could not be bound (nothing is left listening then).
        """
        self._client = _upstream_client(self._upstream_ssl, self._resolver, self.limits)
        try:
            for port, handler in zip(self._ports, (self._http, self._tls), strict=True):
                self._servers.append(
                    await asyncio.start_server(self._guarded(handler), self._host, port)
                )
        except OSError:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop listening, end every open connection, close the upstream client."""
        for server in self._servers:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- connection bookkeeping --------------------------------------------------------------

    def _guarded(
        self, handler: Callable[[TcpStream, Peer], Awaitable[None]]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def _bg_connection(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            guest = TcpStream(reader, writer)
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            self.counters.connections += 1
            peer: Peer | None = None
            try:
                peer = self._admit(writer.get_extra_info("peername"))
                if peer is not None:
                    await handler(guest, peer)
            except (
                OSError,
                TimeoutError,
                IdleTimeout,
                asyncio.IncompleteReadError,
                h11.ProtocolError,
            ) as exc:
                # The guest or the upstream went away, went quiet or spoke garbage mid-stream:
                # routine, not a fault.
                logger.debug("egress connection ended: %r", exc)
            except asyncio.CancelledError:
                # Only aclose cancels these. Ending quietly matters: asyncio's stream server
                # logs a client_connected_cb task that ends cancelled as an error (3.11).
                pass
            except Exception:
                logger.exception("egress gateway: unexpected error on a guest connection")
            finally:
                if peer is not None:
                    self._release(peer)
                self._handlers.discard(task)
                # aclose may cancel this task while it waits here, after the handler ended.
                with contextlib.suppress(asyncio.CancelledError):
                    await guest.aclose()

        return _bg_connection

    def _admit(self, peername: object) -> Peer | None:
        source = peername[0] if isinstance(peername, tuple) else ""
        peer = self._peers(str(source))
        if peer is None:
            self.counters.denies += 1
            logger.debug("egress connection from %s, which is no sandbox: closed", source)
            return None
        active = self.counters.active_by_sandbox.get(peer.sandbox_id, 0)
        if (
            self.counters.active >= self.limits.max_connections
            or active >= self.limits.max_connections_per_sandbox
        ):
            self._deny(peer, None, 0, "too many open connections")
            return None
        self.counters.active += 1
        self.counters.active_by_sandbox[peer.sandbox_id] = active + 1
        return peer

    def _release(self, peer: Peer) -> None:
        self.counters.active -= 1
        left = self.counters.active_by_sandbox[peer.sandbox_id] - 1
        if left:
            self.counters.active_by_sandbox[peer.sandbox_id] = left
        else:
            del self.counters.active_by_sandbox[peer.sandbox_id]

    def _deny(self, peer: Peer, name: str | None, port: int, reason: str) -> None:
        self.counters.denies += 1
        self._audit_sink(
            peer.sandbox_id, "egress.deny", {"name": name, "port": port, "reason": reason}
        )

    # --- the TLS listener --------------------------------------------------------------------

    async def _tls(self, guest: TcpStream, peer: Peer) -> None:
        try:
            async with asyncio.timeout(self.limits.head_timeout_s):
                hello = await read_client_hello(guest.reader, self.limits.max_client_hello_bytes)
        except ClientHelloError as exc:
            self._deny(peer, None, HTTPS_PORT, exc.reason)
            return
        except TimeoutError:
            self._deny(peer, None, HTTPS_PORT, "no ClientHello in time")
            return
        name = hello.server_name
        if secrets_for_host(peer.secrets, name):
            context = self._ca.server_context(name)
            try:
                async with asyncio.timeout(self.limits.head_timeout_s):
                    tls = await TlsStream.accept(guest, context, hello.raw)
            except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
                # Most often a guest that does not trust the isorun CA.
                logger.debug("TLS handshake with sandbox %s failed: %r", peer.sandbox_id, exc)
                return
            self._audit_sink(peer.sandbox_id, "egress.connect", {"name": name, "port": HTTPS_PORT})
            try:
                await self._serve_requests(tls, peer, intercepted=name)
            finally:
                await tls.aclose()
        elif peer.policy.allows_name(name):
            with contextlib.suppress(_Refused):
                await self._splice_to(guest, peer, name, HTTPS_PORT, hello.raw)
        else:
            self._deny(peer, name, HTTPS_PORT, "name not allowed")

    # --- the HTTP listener -------------------------------------------------------------------

    async def _http(self, guest: TcpStream, peer: Peer) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_bytes)
        seen = bytearray()
        try:
            async with asyncio.timeout(self.limits.head_timeout_s):
                request = await _next_request(guest, conn, self.limits.max_head_bytes, seen)
        except h11.RemoteProtocolError as exc:
            self._deny(peer, None, HTTP_PORT, f"malformed request: {exc}")
            return await _refuse(guest, exc.error_status_hint, f"malformed request: {exc}")
        if request is None:
            return None
        try:
            host = _request_host(request)
            if host == self._proxy_address:
                return await self._serve_requests(guest, peer, conn=conn, first=request)
            if not request.target.startswith(b"/"):
                raise _Refused(400, "the request target must be a path (origin-form)")
            await self._splice_to(guest, peer, host, HTTP_PORT, bytes(seen))
        except _Refused as refused:
            return await _refuse(guest, refused.status, refused.reason)
        return None

    # --- plain egress: resolve host-side, connect, splice ------------------------------------

    async def _splice_to(
        self, guest: TcpStream, peer: Peer, name: str, port: int, replay: bytes
    ) -> None:
        """Raises _Refused (audited) when policy or resolution says no."""
        upstream = await self._connect(peer, name, port)
        self.counters.egress_connects += 1
        self._audit_sink(peer.sandbox_id, "egress.connect", {"name": name, "port": port})
        try:
            await upstream.send(replay)
            await splice(guest, upstream, self.limits.idle_timeout_s)
        finally:
            await upstream.aclose()

    async def _connect(self, peer: Peer, name: str, port: int) -> TcpStream:
        literal = _ip_literal(name)
        if literal is not None:
            allowed = peer.policy.allows_address(literal)
            addresses: Sequence[tuple[str, int]] = [(literal, port)]
        else:
            allowed = peer.policy.allows_name(name)
            addresses = []
        if not allowed:
            self._deny(peer, name, port, "name not allowed")
            raise _Refused(403, f"{name} is not allowed by this sandbox's policy")
        if literal is None:
            try:
                async with asyncio.timeout(self.limits.resolve_timeout_s):
                    addresses = await self._resolver(name, port)
            except (OSError, TimeoutError):
                self._deny(peer, name, port, "does not resolve")
                raise _Refused(502, f"{name} does not resolve") from None
            # admits, not allows_address: an allowed name opens its public addresses even
            # under a default-deny profile, but never the closed ranges (metadata, loopback).
            addresses = [a for a in addresses if peer.policy.admits(a[0])]
            if not addresses:
                self._deny(peer, name, port, "resolves only to closed addresses")
                raise _Refused(403, f"{name} resolves only to addresses this sandbox may not reach")
        for address, address_port in addresses:
            try:
                async with asyncio.timeout(self.limits.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(address, address_port)
            except (OSError, TimeoutError) as exc:
                logger.debug("egress connect to %s (%s) failed: %r", name, address, exc)
                continue
            return TcpStream(reader, writer)
        self.counters.upstream_errors += 1
        raise _Refused(502, f"{name} port {port} is unreachable")

    # --- the credential proxy ----------------------------------------------------------------

    async def _serve_requests(
        self,
        guest: ByteStream,
        peer: Peer,
        *,
        intercepted: str | None = None,
        conn: h11.Connection | None = None,
        first: h11.Request | None = None,
    ) -> None:
        """Serve HTTP/1.1 requests on ``guest`` until either side is done.

        ``intercepted``: the SNI of a terminated TLS connection (transparent mode); None for
        the gateway's own address (explicit mode), whose first request is already read.
        """
        if conn is None:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_bytes)
        request = first
        wait_s = self.limits.head_timeout_s
        while True:
            if request is None:
                try:
                    async with asyncio.timeout(wait_s):
                        request = await _next_request(guest, conn, self.limits.max_head_bytes, None)
                except h11.RemoteProtocolError as exc:
                    return await _refuse(guest, exc.error_status_hint, f"malformed request: {exc}")
                if request is None:
                    return None
            try:
                upstream = self._route(peer, request, intercepted)
            except _Refused as refused:
                return await _refuse(guest, refused.status, refused.reason)
            if not await self._forward(guest, conn, peer, request, upstream):
                return None
            async with asyncio.timeout(self.limits.idle_timeout_s):
                await _finish_request(guest, conn)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return None
            conn.start_next_cycle()
            request = None
            wait_s = self.limits.idle_timeout_s

    def _route(self, peer: Peer, request: h11.Request, intercepted: str | None) -> UpstreamRequest:
        """Raises _Refused (audited) for a target no secret serves."""
        target = request.target.decode("ascii")
        port = HTTP_PORT if intercepted is None else HTTPS_PORT
        try:
            if intercepted is None:
                return route_explicit(peer.secrets, target)
            if _request_host(request) != intercepted:
                raise RouteError(421, "the Host header does not match the TLS server name")
            return route_transparent(peer.secrets, intercepted, target)
        except RouteError as exc:
            self._deny(peer, intercepted or self._proxy_address, port, exc.reason)
            raise _Refused(exc.status, exc.reason) from None

    async def _forward(
        self,
        guest: ByteStream,
        conn: h11.Connection,
        peer: Peer,
        request: h11.Request,
        upstream: UpstreamRequest,
    ) -> bool:
        """Send one request upstream and stream the answer back; False: close the connection."""
        assert self._client is not None, "start() first"
        method = request.method.decode("ascii")
        if upstream.secret is not None:
            self.counters.injections += 1
            self._audit_sink(
                peer.sandbox_id, "credential.inject", inject_audit_fields(upstream, method)
            )
        if conn.they_are_waiting_for_100_continue:
            await _emit(guest, conn, h11.InformationalResponse(status_code=100, headers=[]))
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in request.headers)
        url = f"https://{upstream.host_header}{upstream.target}"
        started = False
        try:
            async with self._client.stream(
                method,
                url,
                headers=upstream_headers(
                    list(request.headers), upstream.secret, upstream.host_header
                ),
                content=_request_body(guest, conn, self.limits.idle_timeout_s)
                if has_body
                else None,
            ) as response:
                head = h11.Response(
                    status_code=response.status_code,
                    headers=without_hop_by_hop(list(response.headers.raw)),
                    reason=response.reason_phrase.encode("ascii", "replace"),
                )
                await _emit(guest, conn, head)
                started = True
                async for chunk in response.aiter_raw():
                    await _emit(guest, conn, h11.Data(data=chunk))
                await _emit(guest, conn, h11.EndOfMessage())
        except (httpx.HTTPError, h11.ProtocolError) as exc:
            self.counters.upstream_errors += 1
            logger.debug("credential upstream %s failed: %r", upstream.host, exc)
            if not started:
                await _refuse(
                    guest, 502, f"the upstream {upstream.host} failed: {type(exc).__name__}"
                )
            return False
        return True


# --- helpers -----------------------------------------------------------------------------------


async def _next_request(
    guest: ByteStream, conn: h11.Connection, max_head_bytes: int, seen: bytearray | None
) -> h11.Request | None:
    """The next request head on ``conn``, or None when the guest closed first. ``seen``
    collects every byte read, for a replay upstream.

    Raises:
        h11.RemoteProtocolError: malformed, or a head over the connection's size limit.
    """
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await guest.receive()
            if seen is not None:
                seen += data
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            # h11 bounds only a head still incomplete; one that arrived whole in a read can
            # be larger, so measure it too.
            size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
            if size > max_head_bytes:
                raise h11.RemoteProtocolError("request head too large", 431)
            return event
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None
        else:
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}", 400)


async def _emit(guest: ByteStream, conn: h11.Connection, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await guest.send(data)


async def _request_body(
    guest: ByteStream, conn: h11.Connection, idle_timeout_s: float
) -> AsyncIterator[bytes]:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            async with asyncio.timeout(idle_timeout_s):
                conn.receive_data(await guest.receive())
        elif isinstance(event, h11.Data):
            yield bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return
        else:
            raise h11.RemoteProtocolError("the request body ended early", 400)


async def _finish_request(guest: ByteStream, conn: h11.Connection) -> None:
    """Read the request to its end (a GET's EndOfMessage is an event of its own), so the
    connection can carry the next one."""
    while conn.their_state is h11.SEND_BODY:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await guest.receive())
        elif isinstance(event, h11.ConnectionClosed):
            return


def _request_host(request: h11.Request) -> str:
    """The Host header's name (no port), lower case; IPv4 literals as they are.

    Raises:
        _Refused: 400 when there is none, or it is neither a DNS name nor an IPv4 address.
    """
    values = [v for k, v in request.headers if k == b"host"]
    if len(values) != 1:
        raise _Refused(400, "the request needs exactly one Host header")
    text = values[0].decode("ascii", "replace")
    name, colon, port = text.rpartition(":")
    if not colon or not port.isdigit():
        name = text
    if _ip_literal(name) is not None:
        return name
    normalized = normalize_hostname(name)
    if normalized is None:
        raise _Refused(400, "the Host header is not a DNS name or an IPv4 address")
    return normalized


def _ip_literal(name: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        return None


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
}


async def _refuse(guest: ByteStream, status: int, reason: str) -> None:
    """Answer with a short text/plain error and let the caller close (no h11 state needed)."""
    body = f"isorun egress gateway: {reason}\n".encode("ascii", "replace")
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    with contextlib.suppress(OSError, ssl.SSLError):
        await guest.send(head + body)


def _upstream_client(
    context: ssl.SSLContext, resolver: Resolver, limits: GatewayLimits
) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(verify=context)
    # httpx takes no network backend, and the pool must key connections by host name (so each
    # is verified for the name it serves) while resolving through our resolver: swap the pool.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=limits.max_connections,
        keepalive_expiry=UPSTREAM_KEEPALIVE_S,
        network_backend=_ResolvingBackend(resolver, limits.resolve_timeout_s),
    )
    timeout = httpx.Timeout(limits.idle_timeout_s, connect=limits.connect_timeout_s)
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, trust_env=False, follow_redirects=False
    )


class _ResolvingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, but names go through the gateway's resolver."""

    def __init__(self, resolver: Resolver, resolve_timeout_s: float) -> None:
        self._resolver = resolver
        self._resolve_timeout_s = resolve_timeout_s
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        # The name and keyword are httpcore's interface, which passes it by keyword.
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: object = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(self._resolve_timeout_s):
                addresses = await self._resolver(host, port)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        failure: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address, address_port in addresses:
            try:
                return await self._inner.connect_tcp(address, address_port, timeout, local_address)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
