"""The sandboxes' DNS proxy: the only resolver a guest can reach, and the way names open egress.

Each sandbox's namespace DNATs 10.0.0.1:53 (UDP and TCP) to this one proxy in the host
namespace, so a query's source address is the sandbox's transit address and ``PeerLookup``
(net/peers.py) turns it into the sandbox. Per query::

    bytes ──not a DNS query, oversized──► dropped (counted as malformed)
      │
    peer(source) ──unknown──► REFUSED (EDE Prohibited); nothing asked upstream
      │
    opcode QUERY, one question, class IN ──else──► NOTIMP / FORMERR / REFUSED
    type A or AAAA ──else (ANY, PTR, TXT, MX, HTTPS, ...)──► REFUSED (EDE Not Supported)
      │
    the host of one of the peer's secrets ──► A 10.0.0.1 (the egress gateway: transparent
      │                                      credential mode), whatever the policy says
    policy.rule_for_name(qname) DENIED ──► NXDOMAIN (EDE Blocked); nothing asked upstream,
      │                                    so a denied name cannot carry data out either
    AAAA ──► NOERROR without records: sandboxes have no IPv6
      │
    A ──► a fresh query to the configured upstream (own id, RD, none of the guest's options)
          ──timeout or error──► SERVFAIL;  upstream NXDOMAIN ──► NXDOMAIN
      │
    follow the CNAME chain from qname through the answer; the chain's targets need not be
    allowed themselves: the addresses are opened for the name the guest asked, as every
    DNS-based allow list does. Addresses ``policy.admits`` refuses (closed ranges: a name
    that resolves to 169.254.169.254 or 10.x) are dropped from the answer.
      │
    ttl = min(TTL over the chain) clamped to [MIN_TTL_S, MAX_TTL_S]
    audit (egress.dns: name, type, decision, addresses), then, for a name the policy lists,
    ``await peer.admit(addresses, ttl)``, then the answer, every record's TTL set to ttl so
    the guest's cache never outlives the opening. A name allowed only by ``unrestricted``'s
    default is answered without admitting: its addresses are open by the policy itself.

Denied names get NXDOMAIN, not REFUSED: stub resolvers (glibc, musl, Go) fail fast on it
with "name not known", where REFUSED makes them try again and report a temporary failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from isorun_hostd.config import Settings
from isorun_hostd.net.peers import AuditSink, Peer, PeerLookup, null_audit
from isorun_hostd.net.policy import NameRule
from isorun_hostd.net.spec import HOST_ADDRESS
from isorun_hostd.proxy.credentials import secrets_for_host

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")
AUDIT_KIND = "egress.dns"
# Opened addresses live at least this long (a TTL of 0 would admit nothing usable) and at most
# this long (a week-long TTL would keep a name's old addresses open after a policy change).
MIN_TTL_S = 5
MAX_TTL_S = 3600
# A secret's host answers the gateway's address; short, as the secret may go with a restore.
PROXY_TTL_S = 60
UPSTREAM_TIMEOUT_S = 3.0
# A query is a header, one name (<= 255 bytes) and an OPT record; anything bigger is not one.
MAX_QUERY_BYTES = 1024
# The EDNS buffer size DNS Flag Day 2020 settled on: answers above it go over TCP instead of
# being fragmented.
UDP_PAYLOAD_BYTES = 1232
CLASSIC_UDP_BYTES = 512
TCP_MAX_BYTES = 65535
MAX_CNAME_CHAIN = 16
# A sandbox waiting on this many upstream answers gets SERVFAIL for the next one: one guest
# must not starve the others of the upstream's attention.
MAX_INFLIGHT_PER_PEER = 32
# UDP queries and TCP connections being handled, all sandboxes together; past it datagrams
# are dropped.
MAX_INFLIGHT = 4096
MAX_TCP_CONNECTIONS = 512
TCP_IDLE_TIMEOUT_S = 10.0
BIND_ATTEMPTS = 8


class DnsConfigError(ValueError):
    """The upstream resolver setting cannot be used; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """The resolver the proxy asks. Only hostd's configuration picks it, never a guest."""

    host: str
    port: int = 53

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """``203.0.113.53``, ``203.0.113.53:5353``, ``2001:db8::53`` or ``[2001:db8::53]:53``."""
        host, port = text.strip(), "53"
        if host.startswith("["):
            host, _, rest = host[1:].partition("]")
            port = rest.removeprefix(":") or port
        elif host.count(":") == 1:
            host, port = host.split(":")
        try:
            ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            number = 0
        if not 0 < number < 65536:
            raise DnsConfigError(
                f"DNS upstream {text!r} is not an address or address:port "
                "(ISORUN_DNS_UPSTREAM=203.0.113.53 or 203.0.113.53:5353)"
            )
        return cls(host, number)

    @classmethod
    def from_resolv_conf(cls, path: Path = RESOLV_CONF) -> Upstream:
        """The first ``nameserver`` line of ``path``."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DnsConfigError(
                f"cannot read {path} for the DNS upstream ({exc}): set ISORUN_DNS_UPSTREAM"
            ) from exc
        for line in lines:
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                return cls.parse(words[1])
        raise DnsConfigError(f"{path} names no nameserver: set ISORUN_DNS_UPSTREAM")

    @classmethod
    def from_settings(cls, settings: Settings) -> Upstream:
        if settings.dns_upstream:
            return cls.parse(settings.dns_upstream)
        return cls.from_resolv_conf()


@dataclass(slots=True)
class DnsCounters:
    """What the proxy did, since it started (for metrics and tests)."""

    queries: int = 0  # well-formed queries, from any source
    malformed: int = 0  # dropped: not a DNS query, or oversized
    unknown_peer: int = 0  # REFUSED: the source is no sandbox
    refused: int = 0  # REFUSED / NOTIMP / FORMERR: type, class, opcode or question count
    allowed: int = 0
    denied: int = 0
    upstream_failed: int = 0  # SERVFAIL: the upstream timed out or failed
    overloaded: int = 0  # SERVFAIL or dropped: too many queries in flight
    closed_addresses: int = 0  # A records left out of an answer: in a closed range
    admit_failed: int = 0  # SERVFAIL: Peer.admit raised
    errors: int = 0  # no answer: an unexpected exception, logged (a failing audit sink)


@dataclass(slots=True)
class _Resolved:
    rcode: dns.rcode.Rcode
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    ttl_s: int = MAX_TTL_S


class DnsProxy:
    """Serves DNS on ``host``:``port`` (UDP and TCP; port 0 picks a free one, see ``port``).

    Example::

        proxy = DnsProxy(runtime.peer, Upstream.from_settings(settings), audit=chain.record)
        await proxy.start()
        ...
        await proxy.aclose()
    """

    def __init__(
        self,
        peers: PeerLookup,
        upstream: Upstream,
        *,
        host: str = "127.0.0.1",
        port: int = 53,
        audit: AuditSink = null_audit,
        upstream_timeout_s: float = UPSTREAM_TIMEOUT_S,
        max_inflight_per_peer: int = MAX_INFLIGHT_PER_PEER,
    ) -> None:
        self._peers = peers
        self._upstream = upstream
        self._host = host
        self._port = port
        self._audit = audit
        self._upstream_timeout_s = upstream_timeout_s
        self._max_inflight_per_peer = max_inflight_per_peer
        self.counters = DnsCounters()
        self._inflight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_connections = 0

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the one picked for 0); valid after start()."""
        return self._port

    async def start(self) -> None:
        self._udp, self._tcp = await bind_udp_and_tcp(
            self._host, self._port, lambda: _UdpProtocol(self), self._serve_tcp
        )
        self._port = self._udp.get_extra_info("sockname")[1]
        log.info("DNS proxy on %s:%d, upstream %s", self._host, self._port, self._upstream)

    async def aclose(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
        self._udp = self._tcp = None

    async def answer(self, wire: bytes, source: str, *, tcp: bool) -> bytes | None:
        """The reply to one query from ``source``, or None to send nothing. Over UDP it fits
        the guest's EDNS buffer (512 bytes without EDNS), truncated with TC above it."""
        if len(wire) > MAX_QUERY_BYTES:
            self.counters.malformed += 1
            return None
        try:
            query = dns.message.from_wire(wire)
        # The guest writes these bytes: whatever dnspython rejects them with, drop them.
        except Exception:
            self.counters.malformed += 1
            return None
        if query.flags & dns.flags.QR:
            self.counters.malformed += 1
            return None
        self.counters.queries += 1
        reply = await self._reply(query, _plain_address(source))
        if tcp:
            max_bytes = TCP_MAX_BYTES
        elif query.edns >= 0:
            max_bytes = min(UDP_PAYLOAD_BYTES, max(query.payload, CLASSIC_UDP_BYTES))
        else:
            max_bytes = CLASSIC_UDP_BYTES
        return reply.to_wire(max_size=max_bytes, prefer_truncation=True)

    async def _reply(self, query: dns.message.Message, source: str) -> dns.message.Message:
        peer = self._peers(source)
        if peer is None:
            self.counters.unknown_peer += 1
            return _response(query, dns.rcode.REFUSED, dns.edns.EDECode.PROHIBITED)
        refusal = _refusal(query)
        if refusal is not None:
            self.counters.refused += 1
            if len(query.question) == 1:
                self._record(peer, query.question[0], "refused")
            return _response(query, *refusal)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        if secrets_for_host(peer.secrets, name):
            return self._reply_proxy(query, peer)
        rule = peer.policy.rule_for_name(name)
        if rule is NameRule.DENIED:
            self.counters.denied += 1
            self._record(peer, question, "denied")
            return _response(query, dns.rcode.NXDOMAIN, dns.edns.EDECode.BLOCKED)
        if question.rdtype == dns.rdatatype.AAAA:
            self.counters.allowed += 1
            self._record(peer, question, "allowed")
            return _response(query, dns.rcode.NOERROR)
        return await self._reply_a(query, peer, rule)

    def _reply_proxy(self, query: dns.message.Message, peer: Peer) -> dns.message.Message:
        """A secret's upstream host resolves to the egress gateway (transparent mode): the
        guest's TLS to it ends there, and the real name is resolved on the host."""
        question = query.question[0]
        self.counters.allowed += 1
        self._record(peer, question, "credential proxy")
        response = _response(query, dns.rcode.NOERROR)
        if question.rdtype == dns.rdatatype.A:
            response.answer.append(
                dns.rrset.from_text(question.name, PROXY_TTL_S, "IN", "A", HOST_ADDRESS)
            )
        return response

    async def _reply_a(
        self, query: dns.message.Message, peer: Peer, rule: NameRule
    ) -> dns.message.Message:
        question = query.question[0]
        resolved = await self._resolve(peer, question.name)
        if resolved.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            self.counters.allowed += 1
            self._record(peer, question, "allowed", resolved.addresses)
        if resolved.addresses and rule is NameRule.LISTED:
            try:
                await peer.admit(resolved.addresses, resolved.ttl_s)
            # Peer.admit is hostd's nft call: whatever it raises, the guest must not get
            # addresses it cannot reach.
            except Exception:
                log.exception(
                    "DNS proxy: admitting %s for %s failed", question.name, peer.sandbox_id
                )
                self.counters.admit_failed += 1
                return _response(query, dns.rcode.SERVFAIL)
        response = _response(query, resolved.rcode)
        response.answer = resolved.answer
        return response

    def _record(
        self,
        peer: Peer,
        question: dns.rrset.RRset,
        decision: str,
        addresses: list[str] | None = None,
    ) -> None:
        fields: dict[str, object] = {
            "name": question.name.to_text(omit_final_dot=True),
            "type": dns.rdatatype.to_text(question.rdtype),
            "decision": decision,
        }
        if addresses is not None:
            fields["addresses"] = addresses
        self._audit(peer.sandbox_id, AUDIT_KIND, fields)

    async def _resolve(self, peer: Peer, qname: dns.name.Name) -> _Resolved:
        if self._inflight[peer.sandbox_id] >= self._max_inflight_per_peer:
            self.counters.overloaded += 1
            return _Resolved(dns.rcode.SERVFAIL)
        self._inflight[peer.sandbox_id] += 1
        try:
            async with asyncio.timeout(self._upstream_timeout_s):
                upstream, _ = await dns.asyncquery.udp_with_fallback(
                    dns.message.make_query(qname, dns.rdatatype.A),
                    self._upstream.host,
                    timeout=self._upstream_timeout_s,
                    port=self._upstream.port,
                    # Stray datagrams on the upstream socket are skipped, not taken as the answer.
                    ignore_unexpected=True,
                )
        except (TimeoutError, dns.exception.DNSException, OSError) as exc:
            log.warning("DNS proxy: upstream %s failed for %s: %r", self._upstream, qname, exc)
            self.counters.upstream_failed += 1
            return _Resolved(dns.rcode.SERVFAIL)
        finally:
            self._inflight[peer.sandbox_id] -= 1
            if not self._inflight[peer.sandbox_id]:
                del self._inflight[peer.sandbox_id]
        rcode = upstream.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return _Resolved(rcode)
        if rcode != dns.rcode.NOERROR:
            self.counters.upstream_failed += 1
            return _Resolved(dns.rcode.SERVFAIL)
        return self._follow(peer, upstream, qname)

    def _follow(self, peer: Peer, upstream: dns.message.Message, qname: dns.name.Name) -> _Resolved:
        """The CNAME chain from ``qname`` and the A records at its end, closed ones left out."""
        chain: list[dns.rrset.RRset] = []
        name = qname
        for _ in range(MAX_CNAME_CHAIN):
            cname = upstream.get_rrset(
                upstream.answer, name, dns.rdataclass.IN, dns.rdatatype.CNAME
            )
            if cname is None:
                break
            chain.append(cname)
            name = cname[0].target
        records = upstream.get_rrset(upstream.answer, name, dns.rdataclass.IN, dns.rdatatype.A)
        ttls = [rrset.ttl for rrset in chain]
        kept = []
        if records is not None:
            ttls.append(records.ttl)
            kept = [rd for rd in records if peer.policy.admits(rd.address)]
            self.counters.closed_addresses += len(records) - len(kept)
        ttl = max(MIN_TTL_S, min(MAX_TTL_S, *ttls)) if ttls else MIN_TTL_S
        answer = [dns.rrset.from_rdata_list(rrset.name, ttl, list(rrset)) for rrset in chain]
        if kept:
            answer.append(dns.rrset.from_rdata_list(name, ttl, kept))
        return _Resolved(dns.rcode.NOERROR, answer, [rd.address for rd in kept], ttl)

    def _on_datagram(self, wire: bytes, address: tuple[str, int]) -> None:
        if len(self._tasks) >= MAX_INFLIGHT:
            self.counters.overloaded += 1
            return
        self._spawn(self._answer_udp(wire, address))

    async def _answer_udp(self, wire: bytes, address: tuple[str, int]) -> None:
        reply = await self.answer(wire, address[0], tcp=False)
        if reply is not None and self._udp is not None:
            self._udp.sendto(reply, address)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio (3.11) logs an error when a start_server handler ends cancelled, so the
        # connection runs in a task of ours, which aclose() cancels; this only waits for it.
        await asyncio.wait({self._spawn(self._tcp_session(reader, writer))})

    async def _tcp_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._tcp_connections += 1
        source = writer.get_extra_info("peername")[0]
        try:
            if self._tcp_connections > MAX_TCP_CONNECTIONS:
                self.counters.overloaded += 1
                return
            # RFC 7766 framing: a two-byte length, then the message; several per connection.
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT_S):
                    length = int.from_bytes(await reader.readexactly(2), "big")
                    wire = await reader.readexactly(length)
                reply = await self.answer(wire, source, tcp=True)
                if reply is None:
                    return
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            self._tcp_connections -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _spawn(self, work: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guarded(self, work: Coroutine[object, object, None]) -> None:
        try:
            await work
        # One query's or connection's failure (a failing audit sink) must not stop the proxy;
        # it is logged, and the guest gets no answer.
        except Exception:
            log.exception("DNS proxy: a query failed")
            self.counters.errors += 1


_ANSWERED_TYPES = frozenset({dns.rdatatype.A, dns.rdatatype.AAAA})
_EDE_TEXT = {
    dns.edns.EDECode.PROHIBITED: "this address is not an isorun sandbox",
    dns.edns.EDECode.NOT_SUPPORTED: "isorun's DNS proxy answers A and AAAA queries only",
    dns.edns.EDECode.BLOCKED: "denied by the sandbox's egress policy",
}


def _refusal(
    query: dns.message.Message,
) -> tuple[dns.rcode.Rcode, dns.edns.EDECode | None] | None:
    """Why ``query`` is not one this proxy answers, or None when it is."""
    if query.opcode() != dns.opcode.QUERY:
        return dns.rcode.NOTIMP, None
    if len(query.question) != 1:
        return dns.rcode.FORMERR, None
    question = query.question[0]
    if question.rdclass != dns.rdataclass.IN or question.rdtype not in _ANSWERED_TYPES:
        return dns.rcode.REFUSED, dns.edns.EDECode.NOT_SUPPORTED
    return None


def _response(
    query: dns.message.Message, rcode: dns.rcode.Rcode, ede: dns.edns.EDECode | None = None
) -> dns.message.Message:
    """A reply to ``query`` with ``rcode``; the EDE (RFC 8914) tells ``dig`` users why."""
    response = dns.message.make_response(
        query, recursion_available=True, our_payload=UDP_PAYLOAD_BYTES, pad=0
    )
    response.set_rcode(rcode)
    if ede is not None and response.edns >= 0:
        response.use_edns(
            0,
            payload=UDP_PAYLOAD_BYTES,
            request_payload=response.request_payload,
            options=[dns.edns.EDEOption(ede, _EDE_TEXT[ede])],
        )
    return response


async def bind_udp_and_tcp(
    host: str,
    port: int,
    datagrams: Callable[[], asyncio.DatagramProtocol],
    streams: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.DatagramTransport, asyncio.Server]:
    """Serves UDP and TCP on one port of ``host``; port 0 picks one that is free for both."""
    loop = asyncio.get_running_loop()
    attempts = BIND_ATTEMPTS if port == 0 else 1
    for attempt in range(attempts):
        udp, _ = await loop.create_datagram_endpoint(datagrams, local_addr=(host, port))
        try:
            tcp = await asyncio.start_server(streams, host, udp.get_extra_info("sockname")[1])
        except OSError as exc:
            udp.close()
            # With port 0 the kernel picked a UDP port whose TCP twin is taken: pick again.
            if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
            continue
        return udp, tcp
    raise AssertionError("unreachable: the last attempt returns or raises")


def _plain_address(source: str) -> str:
    """An IPv4-mapped IPv6 source (a dual-stack socket) as plain IPv4."""
    return source.removeprefix("::ffff:") if "." in source else source


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, proxy: DnsProxy) -> None:
        self._proxy = proxy

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        host, port = addr[0], addr[1]
        assert isinstance(host, str)
        self._proxy._on_datagram(data, (host, port))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for replies to a guest that went away; nothing to do.
        log.debug("DNS proxy: UDP error %r", exc)
