"""proxy.dns against a fake upstream resolver, over real sockets on loopback only.

Each sandbox is a loopback source address (127.0.0.0/8 is all loopback on Linux): the client
binds 127.0.0.2 to be sandbox "sb-a", 127.0.0.3 for "sb-open" (unrestricted), and so on.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from isorun_hostd.config import Settings
from isorun_hostd.net.peers import Peer
from isorun_hostd.net.policy import CompiledPolicy
from isorun_hostd.net.spec import EgressPolicy
from isorun_hostd.proxy.dns import (
    MAX_INFLIGHT_PER_PEER,
    MAX_TTL_S,
    MIN_TTL_S,
    DnsConfigError,
    DnsProxy,
    Upstream,
    bind_udp_and_tcp,
)

LOOPBACK = "127.0.0.1"
# Well above the proxy's upstream timeout, so a SERVFAIL arrives before the client gives up.
CLIENT_TIMEOUT_S = 5.0
SANDBOX_A = "127.0.0.2"  # locked-down plus a few example names
SANDBOX_OPEN = "127.0.0.3"  # unrestricted
STRANGER = "127.0.0.9"  # no sandbox

# name -> CNAME target or A addresses, with a TTL. Everything lives in 203.0.113.0/24 except
# the rebinding name's closed addresses.
CNAMES = {
    "www.example.com.": ("cdn.example.net.", 600),
    "cdn.example.net.": ("edge.example.org.", 120),
    "loop.example.com.": ("loop.example.com.", 60),
}
ADDRESSES = {
    "api.example.com.": (["203.0.113.10"], 300),
    "edge.example.org.": (["203.0.113.20", "203.0.113.21"], 60),
    "a.b.example.com.": (["203.0.113.30"], 300),
    "example.com.": (["203.0.113.1"], 300),
    "short.example.com.": (["203.0.113.40"], 1),
    "long.example.com.": (["203.0.113.41"], 86400),
    "rebind.example.com.": (["169.254.169.254", "10.1.2.3", "203.0.113.5"], 300),
    "big.example.com.": ([f"203.0.113.{i}" for i in range(100, 200)], 300),
    "open.example.org.": (["203.0.113.50"], 300),
}
NODATA = {"nodata.example.com."}
SILENT = {"slow.example.com."}


class FakeUpstream:
    """A recursive resolver serving the tables above on one port, UDP and TCP."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.queries: list[dns.message.Message] = []
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        upstream = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
                reply = upstream.respond(data, tcp=False)
                if reply is not None and upstream._udp is not None:
                    upstream._udp.sendto(reply, addr)

        self._udp, self._tcp = await bind_udp_and_tcp(LOOPBACK, 0, Protocol, self._serve_tcp)
        self.port = self._udp.get_extra_info("sockname")[1]

    async def aclose(self) -> None:
        assert self._udp is not None and self._tcp is not None
        self._udp.close()
        self._tcp.close()
        await self._tcp.wait_closed()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = int.from_bytes(await reader.readexactly(2), "big")
        reply = self.respond(await reader.readexactly(length), tcp=True)
        if reply is not None:
            writer.write(len(reply).to_bytes(2, "big") + reply)
            await writer.drain()
        writer.close()

    def respond(self, wire: bytes, *, tcp: bool) -> bytes | None:
        query = dns.message.from_wire(wire)
        self.queries.append(query)
        question = query.question[0]
        name = question.name.to_text().lower()
        self.asked.append(name.rstrip("."))
        if name in SILENT:
            return None
        response = dns.message.make_response(query, recursion_available=True)
        while name in CNAMES:
            target, ttl = CNAMES[name]
            response.answer.append(dns.rrset.from_text(name, ttl, "IN", "CNAME", target))
            if len(response.answer) > 20:
                break
            name = target
        if name in ADDRESSES and question.rdtype == dns.rdatatype.A:
            addresses, ttl = ADDRESSES[name]
            response.answer.append(dns.rrset.from_text_list(name, ttl, "IN", "A", addresses))
        elif name not in ADDRESSES and name not in NODATA and not response.answer:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire(max_size=65535 if tcp else 512, prefer_truncation=True)


@dataclass
class Recorder:
    """Stands in for hostd: the peers, their admit calls and the audit sink."""

    admitted: list[tuple[str, list[str], int, float]] = field(default_factory=list)
    audit: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)
    admit_delay_s: float = 0.0
    admit_error: Exception | None = None
    audit_error: Exception | None = None
    peers: dict[str, Peer] = field(default_factory=dict)

    def add(self, source: str, sandbox_id: str, policy: EgressPolicy) -> None:
        self.peers[source] = Peer(
            sandbox_id, CompiledPolicy.from_policy(policy), (), self._admit_for(sandbox_id)
        )

    def _admit_for(self, sandbox_id: str) -> Callable[[Sequence[str], int], Awaitable[None]]:
        async def admit(addresses: Sequence[str], ttl_s: int) -> None:
            await asyncio.sleep(self.admit_delay_s)
            if self.admit_error is not None:
                raise self.admit_error
            self.admitted.append((sandbox_id, list(addresses), ttl_s, time.monotonic()))

        return admit

    def lookup(self, source: str) -> Peer | None:
        return self.peers.get(source)

    def sink(self, sandbox_id: str, kind: str, fields: Mapping[str, object]) -> None:
        if self.audit_error is not None:
            raise self.audit_error
        self.audit.append((sandbox_id, kind, dict(fields)))


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream()
    await server.start()
    yield server
    await server.aclose()


@pytest.fixture
def hostd() -> Recorder:
    recorder = Recorder()
    recorder.add(
        SANDBOX_A,
        "sb-a",
        EgressPolicy(
            allow=(
                "api.example.com",
                "www.example.com",
                "*.b.example.com",
                "short.example.com",
                "long.example.com",
                "rebind.example.com",
                "big.example.com",
                "nodata.example.com",
                "slow.example.com",
                "missing.example.com",
                "loop.example.com",
            )
        ),
    )
    recorder.add(SANDBOX_OPEN, "sb-open", EgressPolicy(profile="unrestricted"))
    return recorder


StartProxy = Callable[..., Awaitable[DnsProxy]]


@pytest.fixture
async def start_proxy(upstream: FakeUpstream, hostd: Recorder) -> AsyncIterator[StartProxy]:
    """Starts DNS proxies on loopback, asking ``upstream``; stops them after the test."""
    started: list[DnsProxy] = []

    async def start(
        upstream_timeout_s: float = 1.5, max_inflight_per_peer: int = MAX_INFLIGHT_PER_PEER
    ) -> DnsProxy:
        server = DnsProxy(
            hostd.lookup,
            Upstream(LOOPBACK, upstream.port),
            host=LOOPBACK,
            port=0,
            audit=hostd.sink,
            upstream_timeout_s=upstream_timeout_s,
            max_inflight_per_peer=max_inflight_per_peer,
        )
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.aclose()


@pytest.fixture
async def proxy(start_proxy: StartProxy) -> DnsProxy:
    return await start_proxy()


async def until_asked(upstream: FakeUpstream, name: str, count: int) -> None:
    """Waits for the upstream to have been asked ``name`` ``count`` times (or gives up)."""
    for _ in range(500):
        if upstream.asked.count(name) >= count:
            return
        await asyncio.sleep(0.01)


async def ask(
    proxy: DnsProxy,
    name: str,
    rdtype: str = "A",
    *,
    source: str = SANDBOX_A,
    tcp: bool = False,
    edns: bool = True,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    if tcp:
        return await dns.asyncquery.tcp(
            query, LOOPBACK, CLIENT_TIMEOUT_S, proxy.port, source=source
        )
    return await dns.asyncquery.udp(query, LOOPBACK, CLIENT_TIMEOUT_S, proxy.port, source=source)


def a_records(response: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in response.answer if rrset.rdtype == 1 for rd in rrset)


def ede_codes(response: dns.message.Message) -> list[int]:
    return [o.code for o in response.options if isinstance(o, dns.edns.EDEOption)]


# -- allowed names -------------------------------------------------------------------------


async def test_allowed_name_is_admitted_before_the_answer_arrives(
    proxy: DnsProxy, hostd: Recorder, upstream: FakeUpstream
) -> None:
    hostd.admit_delay_s = 0.1
    response = await ask(proxy, "API.Example.COM")
    answered_at = time.monotonic()
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.RA
    assert a_records(response) == ["203.0.113.10"]
    assert response.answer[0].ttl == 300
    [(sandbox, addresses, ttl, admitted_at)] = hostd.admitted
    assert (sandbox, addresses, ttl) == ("sb-a", ["203.0.113.10"], 300)
    assert admitted_at <= answered_at
    assert hostd.audit == [
        (
            "sb-a",
            "egress.dns",
            {"name": "API.Example.COM", "type": "A", "decision": "allowed",
             "addresses": ["203.0.113.10"]},
        )
    ]  # fmt: skip
    assert upstream.asked == ["api.example.com"]
    assert proxy.counters.allowed == 1


async def test_cname_chain_is_followed_and_admitted_for_the_asked_name(
    proxy: DnsProxy, hostd: Recorder
) -> None:
    response = await ask(proxy, "www.example.com")
    names = [(rrset.name.to_text(), rrset.rdtype, rrset.ttl) for rrset in response.answer]
    # The chain's targets (example.net, example.org) are not in sb-a's policy; the lowest TTL
    # of the chain is every record's TTL.
    assert names == [
        ("www.example.com.", dns.rdatatype.CNAME, 60),
        ("cdn.example.net.", dns.rdatatype.CNAME, 60),
        ("edge.example.org.", dns.rdatatype.A, 60),
    ]
    assert a_records(response) == ["203.0.113.20", "203.0.113.21"]
    assert [(sorted(a), t) for _, a, t, _ in hostd.admitted] == [
        (["203.0.113.20", "203.0.113.21"], 60)
    ]


@pytest.mark.parametrize(
    ("name", "ttl"), [("short.example.com", MIN_TTL_S), ("long.example.com", MAX_TTL_S)]
)
async def test_ttl_is_clamped(proxy: DnsProxy, hostd: Recorder, name: str, ttl: int) -> None:
    response = await ask(proxy, name)
    assert response.answer[0].ttl == ttl
    assert hostd.admitted[0][2] == ttl


async def test_wildcard_allows_names_below_but_not_the_domain(
    proxy: DnsProxy, hostd: Recorder, upstream: FakeUpstream
) -> None:
    assert a_records(await ask(proxy, "a.b.example.com")) == ["203.0.113.30"]
    apex = await ask(proxy, "b.example.com")
    assert apex.rcode() == dns.rcode.NXDOMAIN
    assert upstream.asked == ["a.b.example.com"]


async def test_closed_addresses_are_left_out_and_not_admitted(
    proxy: DnsProxy, hostd: Recorder
) -> None:
    response = await ask(proxy, "rebind.example.com")
    assert a_records(response) == ["203.0.113.5"]
    assert [a for _, a, _, _ in hostd.admitted] == [["203.0.113.5"]]
    assert proxy.counters.closed_addresses == 2


async def test_unrestricted_names_are_answered_without_admitting(
    proxy: DnsProxy, hostd: Recorder
) -> None:
    response = await ask(proxy, "open.example.org", source=SANDBOX_OPEN)
    assert a_records(response) == ["203.0.113.50"]
    assert hostd.admitted == []
    assert hostd.audit[0][0] == "sb-open"


async def test_upstream_nxdomain_and_nodata_pass_through(proxy: DnsProxy, hostd: Recorder) -> None:
    missing = await ask(proxy, "missing.example.com")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert ede_codes(missing) == []  # not blocked: it does not exist
    nodata = await ask(proxy, "nodata.example.com")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert hostd.admitted == []


async def test_cname_loop_answers_without_addresses(proxy: DnsProxy, hostd: Recorder) -> None:
    response = await ask(proxy, "loop.example.com")
    assert response.rcode() == dns.rcode.NOERROR
    assert a_records(response) == []
    assert hostd.admitted == []


async def test_upstream_gets_a_fresh_query_not_the_guests(
    proxy: DnsProxy, upstream: FakeUpstream
) -> None:
    query = dns.message.make_query(
        "api.example.com",
        "A",
        use_edns=0,
        options=[
            dns.edns.ECSOption("198.51.100.0", 24),
            dns.edns.GenericOption(dns.edns.OptionType.NSID, b""),
        ],
    )
    query.flags &= ~dns.flags.RD
    response = await dns.asyncquery.udp(
        query, LOOPBACK, CLIENT_TIMEOUT_S, proxy.port, source=SANDBOX_A
    )
    assert a_records(response) == ["203.0.113.10"]
    [sent] = upstream.queries
    assert sent.options == ()
    assert sent.flags & dns.flags.RD
    assert sent.question == query.question


async def test_policy_is_looked_up_per_query(proxy: DnsProxy, hostd: Recorder) -> None:
    assert (await ask(proxy, "api.example.com")).rcode() == dns.rcode.NOERROR
    hostd.add(SANDBOX_A, "sb-a", EgressPolicy())
    assert (await ask(proxy, "api.example.com")).rcode() == dns.rcode.NXDOMAIN
    del hostd.peers[SANDBOX_A]
    assert (await ask(proxy, "api.example.com")).rcode() == dns.rcode.REFUSED


# -- denied, refused, AAAA -----------------------------------------------------------------


async def test_denied_name_is_nxdomain_not_asked_upstream_and_audited(
    proxy: DnsProxy, hostd: Recorder, upstream: FakeUpstream
) -> None:
    response = await ask(proxy, "example.com")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert ede_codes(response) == [dns.edns.EDECode.BLOCKED]
    assert response.answer == []
    assert upstream.asked == []
    assert hostd.admitted == []
    assert hostd.audit == [
        ("sb-a", "egress.dns", {"name": "example.com", "type": "A", "decision": "denied"})
    ]
    assert proxy.counters.denied == 1


async def test_unknown_source_is_refused_without_asking_upstream(
    proxy: DnsProxy, hostd: Recorder, upstream: FakeUpstream
) -> None:
    response = await ask(proxy, "api.example.com", source=STRANGER)
    assert response.rcode() == dns.rcode.REFUSED
    assert ede_codes(response) == [dns.edns.EDECode.PROHIBITED]
    assert (upstream.asked, hostd.admitted, hostd.audit) == ([], [], [])
    assert proxy.counters.unknown_peer == 1


async def test_aaaa_is_empty_for_allowed_names_and_nxdomain_for_denied(
    proxy: DnsProxy, upstream: FakeUpstream, hostd: Recorder
) -> None:
    allowed = await ask(proxy, "api.example.com", "AAAA")
    assert (allowed.rcode(), allowed.answer) == (dns.rcode.NOERROR, [])
    denied = await ask(proxy, "example.com", "AAAA")
    assert denied.rcode() == dns.rcode.NXDOMAIN
    assert upstream.asked == []
    assert [f["decision"] for _, _, f in hostd.audit] == ["allowed", "denied"]


@pytest.mark.parametrize("rdtype", ["ANY", "PTR", "TXT", "MX", "CNAME", "HTTPS"])
async def test_other_types_are_refused(
    proxy: DnsProxy, upstream: FakeUpstream, hostd: Recorder, rdtype: str
) -> None:
    response = await ask(proxy, "api.example.com", rdtype)
    assert response.rcode() == dns.rcode.REFUSED
    assert ede_codes(response) == [dns.edns.EDECode.NOT_SUPPORTED]
    assert upstream.asked == []
    assert hostd.audit[0][2]["decision"] == "refused"


async def test_non_in_class_and_two_questions_are_refused(proxy: DnsProxy) -> None:
    chaos = dns.message.make_query("version.bind", "TXT", "CH")
    response = await dns.asyncquery.udp(
        chaos, LOOPBACK, CLIENT_TIMEOUT_S, proxy.port, source=SANDBOX_A
    )
    assert response.rcode() == dns.rcode.REFUSED
    double = dns.message.make_query("api.example.com", "A")
    double.question.append(
        dns.rrset.RRset(double.question[0].name, dns.rdataclass.IN, dns.rdatatype.AAAA)
    )
    response = await dns.asyncquery.udp(
        double, LOOPBACK, CLIENT_TIMEOUT_S, proxy.port, source=SANDBOX_A
    )
    assert response.rcode() == dns.rcode.FORMERR


# -- TCP, sizes, bad input -----------------------------------------------------------------


async def test_tcp_answers_and_carries_what_udp_truncates(proxy: DnsProxy, hostd: Recorder) -> None:
    # 100 records: more than 512 bytes (the upstream itself falls back to TCP for them) and
    # more than the 1232 bytes of an EDNS answer over UDP.
    over_tcp = await ask(proxy, "big.example.com", tcp=True)
    assert len(a_records(over_tcp)) == 100
    for edns in (True, False):
        over_udp = await ask(proxy, "big.example.com", edns=edns)
        assert over_udp.flags & dns.flags.TC
    denied = await ask(proxy, "example.com", tcp=True)
    assert denied.rcode() == dns.rcode.NXDOMAIN
    assert len(hostd.admitted) == 3


async def test_several_queries_on_one_tcp_connection(proxy: DnsProxy) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port, local_addr=(SANDBOX_A, 0))
    try:
        for name in ("api.example.com", "example.com", "api.example.com"):
            wire = dns.message.make_query(name, "A").to_wire()
            writer.write(len(wire).to_bytes(2, "big") + wire)
        codes = []
        for _ in range(3):
            length = int.from_bytes(await reader.readexactly(2), "big")
            codes.append(dns.message.from_wire(await reader.readexactly(length)).rcode())
        assert codes == [dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.NOERROR]
    finally:
        writer.close()


async def test_malformed_datagrams_are_dropped_and_the_proxy_keeps_serving(
    proxy: DnsProxy,
) -> None:
    response_packet = dns.message.make_response(dns.message.make_query("a.example", "A"))
    junk = [
        b"",
        b"\x00",
        b"\xff" * 40,
        dns.message.make_query("api.example.com", "A").to_wire()[:-3],
        response_packet.to_wire(),
        b"\x00" * 2000,
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((SANDBOX_A, 0))
        for datagram in junk:
            sock.sendto(datagram, (LOOPBACK, proxy.port))
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port, local_addr=(SANDBOX_A, 0))
    writer.write(b"\x00\x05hello")
    assert await reader.read() == b""  # the proxy hung up
    writer.close()
    assert a_records(await ask(proxy, "api.example.com")) == ["203.0.113.10"]
    # The empty datagram never reaches the protocol on every kernel; the rest are all counted.
    assert proxy.counters.malformed >= len(junk)


async def test_upstream_timeout_is_servfail(proxy: DnsProxy, hostd: Recorder) -> None:
    response = await ask(proxy, "slow.example.com")
    assert response.rcode() == dns.rcode.SERVFAIL
    assert hostd.admitted == []
    assert proxy.counters.upstream_failed == 1


async def test_admit_failure_is_servfail(
    proxy: DnsProxy, hostd: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    hostd.admit_error = RuntimeError("nft failed")
    response = await ask(proxy, "api.example.com")
    assert (response.rcode(), response.answer) == (dns.rcode.SERVFAIL, [])
    assert proxy.counters.admit_failed == 1
    assert "admitting api.example.com. for sb-a failed" in caplog.text
    caplog.clear()  # expected: conftest fails a test on any error it did not consume


async def test_failing_audit_sink_gives_no_answer_and_no_admission(
    proxy: DnsProxy, hostd: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    hostd.audit_error = OSError("audit disk full")
    with pytest.raises(dns.exception.Timeout):
        query = dns.message.make_query("api.example.com", "A")
        await dns.asyncquery.udp(query, LOOPBACK, 0.5, proxy.port, source=SANDBOX_A)
    assert hostd.admitted == []
    assert proxy.counters.errors == 1
    assert "audit disk full" in caplog.text
    caplog.clear()  # expected: conftest fails a test on any error it did not consume


# -- load ----------------------------------------------------------------------------------


async def test_many_concurrent_queries_from_two_sandboxes(proxy: DnsProxy) -> None:
    names = ["api.example.com", "www.example.com", "example.com", "a.b.example.com"] * 25
    replies = await asyncio.gather(
        *(ask(proxy, n, source=SANDBOX_A) for n in names),
        *(ask(proxy, "open.example.org", source=SANDBOX_OPEN) for _ in range(50)),
    )
    codes = [r.rcode() for r in replies]
    assert codes.count(dns.rcode.NXDOMAIN) == 25
    assert codes.count(dns.rcode.NOERROR) == 125


async def test_in_flight_queries_are_capped_per_sandbox(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    proxy = await start_proxy(upstream_timeout_s=1.0, max_inflight_per_peer=2)
    slow = [asyncio.create_task(ask(proxy, "slow.example.com")) for _ in range(2)]
    await until_asked(upstream, "slow.example.com", 2)
    over = await ask(proxy, "api.example.com")
    assert over.rcode() == dns.rcode.SERVFAIL
    other = await ask(proxy, "open.example.org", source=SANDBOX_OPEN)
    assert other.rcode() == dns.rcode.NOERROR
    assert [r.rcode() for r in await asyncio.gather(*slow)] == [dns.rcode.SERVFAIL] * 2
    assert a_records(await ask(proxy, "api.example.com")) == ["203.0.113.10"]
    assert proxy.counters.overloaded == 1


# -- the upstream setting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.53", Upstream("203.0.113.53", 53)),
        ("203.0.113.53:5353", Upstream("203.0.113.53", 5353)),
        ("2001:db8::53", Upstream("2001:db8::53", 53)),
        ("[2001:db8::53]:5353", Upstream("2001:db8::53", 5353)),
    ],
)
def test_upstream_parse(text: str, expected: Upstream) -> None:
    assert Upstream.parse(text) == expected


@pytest.mark.parametrize("text", ["dns.example.com", "203.0.113.53:0", "203.0.113.53:x", ""])
def test_bad_upstream_is_named(text: str) -> None:
    with pytest.raises(DnsConfigError, match="ISORUN_DNS_UPSTREAM"):
        Upstream.parse(text)


def test_upstream_from_resolv_conf_and_settings(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# generated\nsearch example.com\nnameserver 192.0.2.53\nnameserver 9.9.9.9\n")
    assert Upstream.from_resolv_conf(conf) == Upstream("192.0.2.53")
    conf.write_text("search example.com\n")
    with pytest.raises(DnsConfigError, match="names no nameserver"):
        Upstream.from_resolv_conf(conf)
    with pytest.raises(DnsConfigError, match="cannot read"):
        Upstream.from_resolv_conf(tmp_path / "missing")
    settings = Settings(dns_upstream="198.51.100.53:53")
    assert Upstream.from_settings(settings) == Upstream("198.51.100.53")


async def test_aclose_ends_pending_queries_and_open_connections(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    proxy = await start_proxy(upstream_timeout_s=60)
    pending = asyncio.create_task(ask(proxy, "slow.example.com"))
    _, writer = await asyncio.open_connection(LOOPBACK, proxy.port, local_addr=(SANDBOX_A, 0))
    await until_asked(upstream, "slow.example.com", 1)
    # aclose cancels the query waiting on the upstream instead of waiting out its timeout.
    await asyncio.wait_for(proxy.aclose(), CLIENT_TIMEOUT_S)
    writer.close()
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)
