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

The credential proxy parses the guest's side with h11 and speaks HTTP/1.1 to the upstream
itself, over one verified TLS connection per guest connection, opened for its first request
and kept for the next ones to the same upstream (while both sides keep alive, at most
``UPSTREAM_KEEPALIVE_S`` idle). The request head is written anew (hop-by-hop headers out, the
real header in) and the body relayed as it arrives; the response is relayed by its framing
(Content-Length, chunked or until close), its head in the same write as the body bytes that
came with it. A request without a body that finds its kept connection closed by the upstream
goes again on a new one; any other failure before the response is a 502.

Audit kinds: ``egress.connect`` {name, port} for each spliced connection, ``egress.deny``
{name, port, reason} for each refusal that had a sandbox behind it, ``credential.inject``
{secret, host, method, path} for each request that got a real header (never the value, never
the query). A refusal closes the connection; every path out of a handler closes both sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import h11

from isorun_hostd.net.peers import AuditSink, Peer, PeerLookup, null_audit
from isorun_hostd.net.spec import HOST_ADDRESS
from isorun_hostd.proxy.ca import CertificateAuthority
from isorun_hostd.proxy.credentials import (
    Headers,
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
from isorun_hostd.proxy.streams import (
    CHUNK_BYTES,
    ByteStream,
    IdleTimeout,
    TcpStream,
    TlsStream,
    splice,
)

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
        try:
            for port, handler in zip(self._ports, (self._http, self._tls), strict=True):
                self._servers.append(
                    await asyncio.start_server(self._guarded(handler), self._host, port)
                )
        except OSError:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop listening and end every open connection (and its upstream connection)."""
        for server in self._servers:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

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
        the gateway's own address (explicit mode), whose first request is already read. The
        upstream connection the first request opens serves the next ones too, while both sides
        keep their connections alive and the next request is for the same upstream.
        """
        if conn is None:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_bytes)
        request = first
        wait_s = self.limits.head_timeout_s
        upstream: _Upstream | None = None
        try:
            while True:
                if request is None:
                    try:
                        async with asyncio.timeout(wait_s):
                            request = await _next_request(
                                guest, conn, self.limits.max_head_bytes, None
                            )
                    except h11.RemoteProtocolError as exc:
                        status = exc.error_status_hint
                        return await _refuse(guest, status, f"malformed request: {exc}")
                    if request is None:
                        return None
                try:
                    route = self._route(peer, request, intercepted)
                except _Refused as refused:
                    return await _refuse(guest, refused.status, refused.reason)
                upstream = await self._forward(guest, conn, peer, request, route, kept=upstream)
                if upstream is None:
                    return None
                await _finish_request(guest, conn, self.limits.idle_timeout_s)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return None
                conn.start_next_cycle()
                request = None
                wait_s = self.limits.idle_timeout_s
        finally:
            if upstream is not None:
                upstream.close()

    def _route(self, peer: Peer, request: h11.Request, intercepted: str | None) -> UpstreamRequest:
        """Raises _Refused (audited) for a target no secret serves."""
        target = request.target.decode("ascii")
        port = HTTP_PORT if intercepted is None else HTTPS_PORT
        try:
            if intercepted is None:
                return route_explicit(peer.secrets, target)
            if not _host_is(request, intercepted):
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
        route: UpstreamRequest,
        *,
        kept: _Upstream | None,
    ) -> _Upstream | None:
        """Send one request upstream and stream the answer back.

        ``kept``: the upstream connection the previous request on this guest connection used.
        Returns the upstream connection to keep for the next request; None: close the guest's.
        """
        if route.secret is not None:
            self.counters.injections += 1
            self._audit_sink(
                peer.sandbox_id,
                "credential.inject",
                inject_audit_fields(route, request.method.decode("ascii")),
            )
        if conn.they_are_waiting_for_100_continue:
            await _emit(guest, conn, h11.InformationalResponse(status_code=100, headers=[]))
        reply = _Reply(guest, conn)
        try:
            upstream, response = await self._exchange(guest, conn, request, route, kept)
        except (_UpstreamError, h11.ProtocolError) as exc:
            await self._upstream_failed(guest, route, exc, reply)
            return None
        try:
            reply.write(
                h11.Response(
                    status_code=response.status,
                    headers=without_hop_by_hop(response.headers),
                    reason=response.reason,
                )
            )
            await upstream.relay_body(response, reply.data, reply.flush)
            reply.write(h11.EndOfMessage())
            await reply.flush()
        except (_UpstreamError, h11.ProtocolError) as exc:
            upstream.close()
            await self._upstream_failed(guest, route, exc, reply)
            return None
        except BaseException:
            upstream.close()
            raise
        return upstream

    async def _exchange(
        self,
        guest: ByteStream,
        conn: h11.Connection,
        request: h11.Request,
        route: UpstreamRequest,
        kept: _Upstream | None,
    ) -> tuple[_Upstream, _ResponseHead]:
        """Send the request (head, then the guest's body as it comes) over ``kept`` when it
        can carry it, else over a new connection; return that and the response head. Every
        connection but the one returned is closed.

        Raises:
            _UpstreamError: no connection, or the request or the response head failed.
            h11.ProtocolError: the guest's body was malformed.
        """
        head, chunked = _request_head(request, route)
        has_body = chunked or any(k == b"content-length" for k, _ in request.headers)
        if kept is not None and not kept.reusable_for(route.host, route.port):
            kept.close()
            kept = None
        while True:
            upstream = kept or await self._open_upstream(route.host, route.port)
            try:
                await upstream.send(head)
                if has_body:
                    await _send_body(guest, conn, upstream, chunked, self.limits.idle_timeout_s)
                return upstream, await upstream.read_head(request.method == b"HEAD")
            except _UpstreamClosed:
                upstream.close()
                # A kept connection the upstream had closed meanwhile (found out only now): a
                # request without a body goes again, on a new connection.
                if upstream is not kept or has_body:
                    raise
                logger.debug("kept connection to %s was closed: a new one", route.host)
                kept = None
            except BaseException:
                upstream.close()
                raise

    async def _upstream_failed(
        self, guest: ByteStream, route: UpstreamRequest, exc: Exception, reply: _Reply
    ) -> None:
        """Count and log a failed upstream request; a 502 when the guest got nothing of the
        response yet. The guest connection closes after."""
        self.counters.upstream_errors += 1
        logger.debug("credential upstream %s failed: %r", route.host, exc)
        if not reply.sent:
            await _refuse(guest, 502, f"the upstream {route.host} failed: {exc}")

    async def _open_upstream(self, host: str, port: int) -> _Upstream:
        """A new verified TLS connection to ``host``, resolved host-side.

        Raises:
            _UpstreamError: the name does not resolve, or no address connects and verifies.
        """
        try:
            async with asyncio.timeout(self.limits.resolve_timeout_s):
                addresses = await self._resolver(host, port)
        except (OSError, TimeoutError) as exc:
            raise _UpstreamError(f"{host} does not resolve ({exc!r})") from None
        failure = f"{host} resolves to no address"
        for address, address_port in addresses:
            try:
                async with asyncio.timeout(self.limits.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(
                        address, address_port, ssl=self._upstream_ssl, server_hostname=host
                    )
            except (OSError, TimeoutError) as exc:
                failure = f"{host} ({address}) did not connect ({exc!r})"
                logger.debug("credential upstream connect: %s", failure)
                continue
            return _Upstream(host, port, reader, writer, self.limits.idle_timeout_s)
        raise _UpstreamError(failure)


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


async def _finish_request(guest: ByteStream, conn: h11.Connection, idle_timeout_s: float) -> None:
    """Read the request to its end (a GET's EndOfMessage is an event of its own), so the
    connection can carry the next one."""
    while conn.their_state is h11.SEND_BODY:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            async with asyncio.timeout(idle_timeout_s):
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


def _host_is(request: h11.Request, name: str) -> bool:
    """Whether the request's Host names ``name`` (a normalized DNS name): ``_request_host``'s
    answer, without its parsing when the one Host header is ``name`` as it is.

    Raises:
        _Refused: as ``_request_host``.
    """
    values = [v for k, v in request.headers if k == b"host"]
    if len(values) == 1 and values[0].lower() == name.encode():
        return True
    return _request_host(request) == name


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


# --- the upstream side of the credential proxy -------------------------------------------------


class _UpstreamError(Exception):
    """The upstream did not resolve, connect, verify or answer in HTTP/1.1 as it should."""


class _UpstreamClosed(_UpstreamError):
    """The upstream closed the connection before answering any of this request."""


class _Framing(enum.Enum):
    """How a response body ends (RFC 9112 §6.3)."""

    NONE = enum.auto()
    LENGTH = enum.auto()
    CHUNKED = enum.auto()
    CLOSE = enum.auto()


@dataclass(frozen=True, slots=True)
class _ResponseHead:
    """An upstream's final response head: ``length`` counts for ``Framing.LENGTH`` only;
    ``keep_alive``: the connection can carry another request after this response."""

    status: int
    reason: bytes
    headers: Headers
    framing: _Framing
    length: int
    keep_alive: bool


_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
_HEADER_LINE = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*((?:[\x21-\x7e\x80-\xff][\t\x20-\x7e\x80-\xff]*)?)"
)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\r\n")
MAX_UPSTREAM_HEAD_BYTES = 64 * 1024


def _parse_response_head(data: bytes, head_request: bool) -> _ResponseHead:
    """A response head (ending in CRLF CRLF) as read from an upstream.

    Raises:
        _UpstreamError: a malformed line, or framing that is ambiguous (both Content-Length and
            Transfer-Encoding, differing lengths, a coding other than chunked).
    """
    lines = data[:-4].split(b"\r\n")
    status_line = _STATUS_LINE.fullmatch(lines[0])
    if status_line is None:
        raise _UpstreamError(f"malformed status line {lines[0][:80]!r}")
    headers: Headers = []
    for line in lines[1:]:
        field_line = _HEADER_LINE.fullmatch(line)
        if field_line is None:
            raise _UpstreamError(f"malformed header line {line[:80]!r}")
        headers.append((field_line[1].lower(), field_line[2].rstrip(b" \t")))
    status = int(status_line[2])
    codings = b",".join(v for k, v in headers if k == b"transfer-encoding")
    lengths = {part.strip() for k, v in headers if k == b"content-length" for part in v.split(b",")}
    connection = {
        token.strip().lower() for k, v in headers if k == b"connection" for token in v.split(b",")
    }
    keep_alive = status_line[1] == b"1" and b"close" not in connection
    length = 0
    if head_request or status < 200 or status in (204, 304):
        framing = _Framing.NONE
    elif codings:
        if lengths or [c.strip().lower() for c in codings.split(b",")] != [b"chunked"]:
            raise _UpstreamError(f"unsupported framing: Transfer-Encoding {codings!r}")
        framing = _Framing.CHUNKED
    elif lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise _UpstreamError(f"bad Content-Length {sorted(lengths)!r}")
        framing, length = _Framing.LENGTH, int(next(iter(lengths)))
    else:
        framing, keep_alive = _Framing.CLOSE, False
    return _ResponseHead(status, status_line[3] or b"", headers, framing, length, keep_alive)


class _Reply:
    """A response to the guest, framed by its h11 connection and sent in as few writes as
    possible: what is written goes out at the next ``flush``. The head thus leaves together
    with the part of the body that has already arrived."""

    def __init__(self, guest: ByteStream, conn: h11.Connection) -> None:
        self._guest = guest
        self._conn = conn
        self._parts: list[bytes] = []
        self.sent = False

    def write(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if data:
            self._parts.append(data)

    def data(self, data: bytes) -> None:
        self.write(h11.Data(data=data))

    async def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            self.sent = True
            await self._guest.send(data)


class _Upstream:
    """One HTTP/1.1 connection over verified TLS to a credential upstream, used by one guest
    connection for its requests in turn. Reads go through a buffer of its own, so that what
    has already arrived is relayed without waiting; a wait for more lasts at most
    ``idle_timeout_s``. Every failure is an ``_UpstreamError``."""

    def __init__(
        self,
        host: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        idle_timeout_s: float,
    ) -> None:
        self.host = host
        self.port = port
        self._reader = reader
        self._writer = writer
        self._idle_timeout_s = idle_timeout_s
        self._buffer = bytearray()
        self._loop = asyncio.get_running_loop()
        self._keep_alive = True
        self._closed = False
        self._idle_since = self._loop.time()

    def reusable_for(self, host: str, port: int) -> bool:
        """Whether the next request to ``host``:``port`` can go over this connection."""
        return (
            self._keep_alive
            and (host, port) == (self.host, self.port)
            and not self._buffer
            and self._loop.time() - self._idle_since < UPSTREAM_KEEPALIVE_S
            and not self._reader.at_eof()
            and not self._writer.is_closing()
        )

    async def send(self, data: bytes) -> None:
        """Raises _UpstreamClosed when the upstream had closed or reset the connection."""
        self._writer.write(data)
        try:
            if self._writer.transport.get_write_buffer_size():
                async with asyncio.timeout(self._idle_timeout_s):
                    await self._writer.drain()
            else:
                await self._writer.drain()
        except ConnectionError as exc:
            raise _UpstreamClosed(f"the upstream closed the connection ({exc!r})") from None
        except (OSError, TimeoutError) as exc:
            raise _UpstreamError(f"sending failed ({exc!r})") from None

    async def read_head(self, head_request: bool) -> _ResponseHead:
        """The final response head; interim (1xx) ones are dropped, as the gateway answered
        the guest's ``Expect`` itself.

        Raises:
            _UpstreamClosed: the upstream closed or reset the connection before any byte.
        """
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(self._buffer) > MAX_UPSTREAM_HEAD_BYTES:
                    raise _UpstreamError("the response head is too large")
                try:
                    more = await self._fill()
                except _UpstreamClosed:
                    if self._buffer:
                        raise _UpstreamError("the upstream reset the connection mid-head") from None
                    raise
                if not more:
                    if self._buffer:
                        raise _UpstreamError("the upstream closed the connection mid-head")
                    raise _UpstreamClosed("the upstream closed the connection")
                end = self._buffer.find(b"\r\n\r\n")
            head = _parse_response_head(self._take(end + 4), head_request)
            if head.status == 101:
                raise _UpstreamError("the upstream switched protocols unasked")
            if head.status >= 200:
                self._keep_alive = head.keep_alive
                return head

    async def relay_body(
        self,
        head: _ResponseHead,
        write: Callable[[bytes], None],
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        """Pass the body to ``write`` as it arrives (chunked framing taken off), calling
        ``flush`` before each wait for more; the caller flushes after the end."""
        if head.framing is _Framing.LENGTH:
            await self._relay(head.length, write, flush)
        elif head.framing is _Framing.CHUNKED:
            while True:
                size = _CHUNK_SIZE.fullmatch(await self._line(flush))
                if size is None:
                    raise _UpstreamError("malformed chunk size line")
                length = int(size[1], 16)
                if not length:
                    break
                await self._relay(length, write, flush)
                if await self._line(flush) != b"\r\n":
                    raise _UpstreamError("a chunk did not end in CRLF")
            # Trailer fields are dropped: the guest's response is framed anew.
            while await self._line(flush) != b"\r\n":
                pass
        elif head.framing is _Framing.CLOSE:
            while True:
                if self._buffer:
                    write(self._take(len(self._buffer)))
                await flush()
                if not await self._fill():
                    break
        self._idle_since = self._loop.time()

    def close(self) -> None:
        """Start closing (TLS close_notify goes out in the background); idempotent."""
        self._keep_alive = False
        if not self._closed:
            self._closed = True
            self._writer.close()

    async def _relay(
        self, length: int, write: Callable[[bytes], None], flush: Callable[[], Awaitable[None]]
    ) -> None:
        while length:
            if not self._buffer:
                await flush()
                await self._fill_or_fail()
            data = self._take(min(length, len(self._buffer)))
            length -= len(data)
            write(data)

    async def _line(self, flush: Callable[[], Awaitable[None]]) -> bytes:
        """The next line, CRLF included (chunk sizes and trailers)."""
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > MAX_UPSTREAM_HEAD_BYTES:
                raise _UpstreamError("a chunk size or trailer line is too long")
            await flush()
            await self._fill_or_fail()
        return self._take(end + 2)

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _fill(self) -> bool:
        """Wait for more bytes from the upstream; False at its end of the stream.

        Raises:
            _UpstreamClosed: the upstream reset the connection.
            _UpstreamError: nothing came for ``idle_timeout_s``, or TLS failed.
        """
        try:
            async with asyncio.timeout(self._idle_timeout_s):
                data = await self._reader.read(CHUNK_BYTES)
        except ConnectionError as exc:
            raise _UpstreamClosed(f"the upstream reset the connection ({exc!r})") from None
        except (OSError, TimeoutError) as exc:
            raise _UpstreamError(f"reading failed ({exc!r})") from None
        if not data:
            self._keep_alive = False
            return False
        self._buffer += data
        return True

    async def _fill_or_fail(self) -> None:
        if not await self._fill():
            raise _UpstreamError("the upstream closed the connection mid-body")


def _request_head(request: h11.Request, route: UpstreamRequest) -> tuple[bytes, bool]:
    """The request head for the upstream, and whether its body goes chunked (as the guest's
    did; h11 admits no other transfer coding).

    Raises:
        _UpstreamError: the secret's header value is no valid field value.
    """
    chunked = any(k == b"transfer-encoding" for k, _ in request.headers)
    try:
        headers = upstream_headers(list(request.headers), route.secret, route.host_header)
    except RouteError as exc:
        raise _UpstreamError(exc.reason) from None
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    lines = [b"%s %s HTTP/1.1" % (request.method, route.target.encode("ascii"))]
    lines.extend(b"%s: %s" % field for field in headers)
    lines.append(b"\r\n")
    return b"\r\n".join(lines), chunked


async def _send_body(
    guest: ByteStream,
    conn: h11.Connection,
    upstream: _Upstream,
    chunked: bool,
    idle_timeout_s: float,
) -> None:
    """Relay the guest's request body to ``upstream`` as it arrives, re-chunked if it was."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            async with asyncio.timeout(idle_timeout_s):
                conn.receive_data(await guest.receive())
        elif isinstance(event, h11.Data):
            # Never an empty chunk: "0" would end the body early, upstream.
            if data := event.data:
                await upstream.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        elif isinstance(event, h11.EndOfMessage):
            if chunked:
                await upstream.send(b"0\r\n\r\n")
            return
        else:
            raise h11.RemoteProtocolError("the request body ended early", 400)
