"""The egress gateway end to end over loopback sockets: a guest bound to 127.0.0.2, the gateway
on 127.0.0.1, upstreams on 127.0.0.3-5 reached through a dict resolver (see proxy_support)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

import httpx
import pytest
from isorun_hostd.net.policy import CompiledPolicy
from isorun_hostd.net.spec import EgressPolicy, SecretSpec
from proxy_support import (
    ALLOWED_HOST,
    GUEST,
    SPLICE_ADDRESS,
    UPSTREAM_HOST,
    StandInPolicy,
    World,
    client_hello,
    make_peer,
)

PLAIN_ADDRESS = "127.0.0.5"
PLACEHOLDER = "Bearer isorun-placeholder-OPENAI_API_KEY"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(autouse=True)
def _no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A refusal is routine: nothing the guest sends may make the gateway log an error."""
    with caplog.at_level(logging.DEBUG):
        yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def guest_http(world: World, source: str = GUEST) -> httpx.AsyncClient:
    """A guest's HTTP client: its port 80 traffic lands on the gateway's HTTP listener."""
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=source),
        base_url=f"http://127.0.0.1:{world.gateway.http_port}",
        headers={"Host": "10.0.0.1"},
        trust_env=False,
        timeout=10,
    )


def guest_https(world: World, verify: ssl.SSLContext) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=GUEST, verify=verify),
        trust_env=False,
        timeout=10,
    )


async def exchange(port: int, data: bytes, source: str = GUEST, eof: bool = False) -> bytes:
    """Send raw bytes as a guest and read until the gateway closes (b"" on a reset)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        async with asyncio.timeout(5):
            return await reader.read()
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def listening(
    address: str, handler: Handler, context: ssl.SSLContext | None = None
) -> AsyncIterator[list[int]]:
    """A server on ``address``; yields [port, connections accepted]."""
    state = [0, 0]

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state[1] += 1
        try:
            await handler(reader, writer)
        except (OSError, asyncio.CancelledError):
            pass  # cancelled at loop teardown: end quietly, or asyncio logs an error (3.11)
        finally:
            writer.close()

    server = await asyncio.start_server(counted, address, 0, ssl=context)
    state[0] = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()


async def echo_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readline())
    await writer.drain()


async def echo_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers only once the client has half-closed: proves the FIN went through the splice."""
    received = await reader.read()
    body = b"got %d bytes" % len(received)
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()


def sandbox(world: World, names: Iterable[str], *secrets: SecretSpec) -> None:
    """The guest at 127.0.0.2: a stand-in policy allowing ``names``, and ``secrets``."""
    world.peers[GUEST] = make_peer(StandInPolicy(set(names)), secrets)


# --- explicit credential mode ------------------------------------------------------------------


async def test_explicit_mode_replaces_the_placeholder_with_the_real_header(world: World) -> None:
    sandbox(world, set(), world.secret())
    async with guest_http(world) as guest:
        answer = await guest.get(
            "/s/OPENAI_API_KEY/models?limit=1", headers={"Authorization": PLACEHOLDER}
        )
        posted = await guest.post("/s/OPENAI_API_KEY/chat/completions", json={"model": "m"})
    assert answer.status_code == 200, answer.text
    first, second = world.upstream.seen
    assert first.target == "/v1/models?limit=1"
    assert first.headers["authorization"] == "Bearer real-OPENAI_API_KEY"
    assert first.headers["host"] == UPSTREAM_HOST
    assert posted.status_code == 200
    assert (second.method, second.target, second.body) == (
        "POST",
        "/v1/chat/completions",
        b'{"model":"m"}',
    )
    assert world.audit.kinds("credential.inject") == [
        {"secret": "OPENAI_API_KEY", "host": UPSTREAM_HOST, "method": "GET", "path": "/v1/models"},
        {
            "secret": "OPENAI_API_KEY",
            "host": UPSTREAM_HOST,
            "method": "POST",
            "path": "/v1/chat/completions",
        },
    ]
    counters = world.gateway.counters
    assert (counters.connections, counters.injections, counters.denies) == (1, 2, 0)
    assert world.upstream.connections == 1  # kept alive from the first request to the second
    assert "real-OPENAI_API_KEY" not in repr(world.audit.entries)


async def test_a_custom_header_secret_drops_the_guest_copy(world: World) -> None:
    secret = world.secret("ANTHROPIC_API_KEY", "/", header="x-api-key: {value}")
    sandbox(world, set(), secret)
    async with guest_http(world) as guest:
        answer = await guest.get(
            "/s/ANTHROPIC_API_KEY/v1/messages",
            headers={"x-api-key": "isorun-placeholder-ANTHROPIC_API_KEY", "Authorization": "x"},
        )
    assert answer.status_code == 200
    headers = world.upstream.seen[0].headers
    assert headers["x-api-key"] == "real-ANTHROPIC_API_KEY"
    assert "authorization" not in headers


async def test_sse_streams_each_event_as_it_arrives(world: World) -> None:
    sandbox(world, set(), world.secret())
    loop = asyncio.get_running_loop()
    async with (
        guest_http(world) as guest,
        guest.stream("GET", "/s/OPENAI_API_KEY/sse") as response,
    ):
        lines = response.aiter_lines()
        assert await anext(lines) == "data: first"
        first_at = loop.time()
        world.upstream.sse_gate.set()
        rest = [line async for line in lines if line]
    assert rest == ["data: second", "data: last"]
    # Buffered, the first event would have come only after the upstream's 3 s wait ended.
    assert world.upstream.sse_last_sent_at is not None
    assert first_at < world.upstream.sse_last_sent_at


async def test_a_chunked_upload_streams_through(world: World) -> None:
    sandbox(world, set(), world.secret())

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    async with guest_http(world) as guest:
        answer = await guest.post("/s/OPENAI_API_KEY/uploads", content=parts())
        after = await guest.post("/s/OPENAI_API_KEY/uploads", content=b"sized")
    assert (answer.status_code, after.status_code) == (200, 200)
    seen, seen_after = world.upstream.seen
    assert seen.body == b"one,two,three"
    assert seen.headers["transfer-encoding"] == "chunked"
    assert (seen_after.body, seen_after.headers["content-length"]) == (b"sized", "5")
    assert world.upstream.connections == 1


async def test_expect_100_continue_is_answered_by_the_gateway(world: World) -> None:
    sandbox(world, set(), world.secret())
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", world.gateway.http_port, local_addr=(GUEST, 0)
    )
    writer.write(
        b"POST /s/OPENAI_API_KEY/files HTTP/1.1\r\nHost: 10.0.0.1\r\n"
        b"Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    async with asyncio.timeout(5):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 ")
        writer.write(b"hello")
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    [seen] = world.upstream.seen
    assert seen.body == b"hello"
    assert "expect" not in seen.headers


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/s/UNKNOWN/models", 404),
        ("/", 404),
        ("/s/OPENAI_API_KEY/../admin", 400),
        ("/s/OPENAI_API_KEY/%2e%2e/admin", 400),
        ("/s/OPENAI_API_KEY/..%2Fadmin", 400),
        ("/s/OPENAI_API_KEY/x%0D%0AHost:%20evil.test", 400),
    ],
)
async def test_explicit_refusals_reach_no_upstream(world: World, path: str, status: int) -> None:
    sandbox(world, set(), world.secret())
    head = f"GET {path} HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n".encode()
    answer = await exchange(world.gateway.http_port, head)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    assert b"isorun egress gateway" in answer
    assert world.upstream.seen == []
    assert world.gateway.counters.denies == 1
    assert world.audit.kinds("egress.deny")[0]["name"] == "10.0.0.1"


async def test_an_upstream_that_fails_is_a_502(world: World) -> None:
    gone = SecretSpec(name="GONE", value="v", upstream="https://nowhere.test/v1")
    sandbox(world, set(), gone)
    async with guest_http(world) as guest:
        answer = await guest.get("/s/GONE/models")
    assert answer.status_code == 502
    assert world.gateway.counters.upstream_errors == 1


async def test_an_upstream_without_a_trusted_certificate_is_a_502(world: World) -> None:
    # The upstream's certificate is signed by the test PKI; this gateway trusts only the
    # system store, so the request must fail rather than send the secret.
    world.gateway._upstream_ssl = ssl.create_default_context()
    await world.gateway.aclose()
    await world.gateway.start()
    sandbox(world, set(), world.secret())
    async with guest_http(world) as guest:
        answer = await guest.get("/s/OPENAI_API_KEY/models")
    assert answer.status_code == 502
    assert world.upstream.seen == []


def scripted(*responses: bytes | None, close_after_each: bool = False) -> Handler:
    """An upstream answering the requests on a connection with ``responses`` in turn (the
    same list across connections), each head read to its end first; bodies are not expected.
    None: close without answering. ``close_after_each``: close after every response."""
    queue = list(responses)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while queue:
            with contextlib.suppress(asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")
            response = queue.pop(0)
            if response is None:
                return
            writer.write(response)
            await writer.drain()
            if close_after_each:
                return

    return handle


async def test_upstream_framings_are_relayed_and_the_connection_kept(world: World) -> None:
    sandbox(world, set(), world.secret())
    context = world.pki.server_context(UPSTREAM_HOST)
    handler = scripted(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # to a HEAD: no body follows
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    )
    async with listening(PLAIN_ADDRESS, handler, context) as server:
        world.names[UPSTREAM_HOST] = (PLAIN_ADDRESS, server[0])
        async with guest_http(world) as guest:
            head = await guest.head("/s/OPENAI_API_KEY/a")
            chunked = await guest.get("/s/OPENAI_API_KEY/b")
            early = await guest.get("/s/OPENAI_API_KEY/c")
            to_close = await guest.get("/s/OPENAI_API_KEY/d")
        connections = server[1]
    assert (head.status_code, head.headers["content-length"], head.content) == (200, "5", b"")
    assert (chunked.status_code, chunked.content) == (200, b"hello world")
    assert "x-trailer" not in chunked.headers
    assert (early.status_code, early.content) == (201, b"ok")
    assert (to_close.status_code, to_close.content) == (200, b"until the end")
    assert connections == 1
    assert world.gateway.counters.upstream_errors == 0


@pytest.mark.parametrize("when", ["after its answer", "on the next request"])
async def test_a_kept_upstream_connection_that_was_closed_is_replaced(
    world: World, when: str
) -> None:
    sandbox(world, set(), world.secret())
    context = world.pki.server_context(UPSTREAM_HOST)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    if when == "after its answer":
        handler = scripted(answer, answer, close_after_each=True)
    else:  # closed only when the request arrives: the gateway sends it again, elsewhere
        handler = scripted(answer, None, answer)
    async with listening(PLAIN_ADDRESS, handler, context) as server:
        world.names[UPSTREAM_HOST] = (PLAIN_ADDRESS, server[0])
        async with guest_http(world) as guest:
            answers = [await guest.get("/s/OPENAI_API_KEY/models") for _ in range(2)]
        connections = server[1]
    assert [a.status_code for a in answers] == [200, 200]
    assert connections == 2
    assert world.gateway.counters.upstream_errors == 0


@pytest.mark.parametrize(
    "response",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
    ],
)
async def test_a_malformed_upstream_response_is_a_502(world: World, response: bytes) -> None:
    sandbox(world, set(), world.secret())
    context = world.pki.server_context(UPSTREAM_HOST)
    async with listening(
        PLAIN_ADDRESS, scripted(response, close_after_each=True), context
    ) as server:
        world.names[UPSTREAM_HOST] = (PLAIN_ADDRESS, server[0])
        async with guest_http(world) as guest:
            answer = await guest.get("/s/OPENAI_API_KEY/models")
    assert answer.status_code == 502
    assert world.gateway.counters.upstream_errors == 1


async def test_a_secret_value_that_would_break_the_head_is_never_sent(world: World) -> None:
    secret = SecretSpec(name="K", value="v\r\nX-Injected: 1", upstream=f"https://{UPSTREAM_HOST}/")
    sandbox(world, set(), secret)
    async with guest_http(world) as guest:
        answer = await guest.get("/s/K/models")
    assert answer.status_code == 502
    assert world.upstream.seen == []


# --- transparent credential mode ---------------------------------------------------------------


async def test_transparent_mode_injects_under_the_base_path_only(world: World) -> None:
    sandbox(world, set(), world.secret())
    trusting = ssl.create_default_context(cadata=world.ca.cert_pem.decode())
    url = f"https://127.0.0.1:{world.gateway.tls_port}"
    sni = {"sni_hostname": UPSTREAM_HOST}
    async with guest_https(world, trusting) as guest:
        injected = await guest.get(
            f"{url}/v1/models",
            headers={"Host": UPSTREAM_HOST, "Authorization": PLACEHOLDER},
            extensions=sni,
        )
        outside = await guest.get(
            f"{url}/v2/other",
            headers={"Host": UPSTREAM_HOST, "Authorization": PLACEHOLDER},
            extensions=sni,
        )
        fronted = await guest.get(f"{url}/v1/models", headers={"Host": "evil.test"}, extensions=sni)
    assert injected.status_code == 200
    assert injected.json()["headers"]["authorization"] == "Bearer real-OPENAI_API_KEY"
    assert outside.status_code == 200
    assert outside.json()["headers"]["authorization"] == PLACEHOLDER
    assert fronted.status_code == 421
    assert [s.target for s in world.upstream.seen] == ["/v1/models", "/v2/other"]
    assert world.upstream.connections == 1  # both over the intercepted connection's one
    assert world.audit.kinds("credential.inject") == [
        {"secret": "OPENAI_API_KEY", "host": UPSTREAM_HOST, "method": "GET", "path": "/v1/models"}
    ]


async def test_a_guest_that_does_not_trust_the_ca_gets_nothing(world: World) -> None:
    sandbox(world, set(), world.secret())
    async with guest_https(world, ssl.create_default_context()) as guest:
        with pytest.raises(httpx.ConnectError):
            await guest.get(
                f"https://127.0.0.1:{world.gateway.tls_port}/v1/models",
                headers={"Host": UPSTREAM_HOST},
                extensions={"sni_hostname": UPSTREAM_HOST},
            )
    assert world.upstream.seen == []


# --- TLS egress by SNI -------------------------------------------------------------------------


async def test_an_allowed_name_is_spliced_to_its_host_side_address(world: World) -> None:
    sandbox(world, {ALLOWED_HOST})
    context = world.pki.server_context(ALLOWED_HOST)
    async with listening(SPLICE_ADDRESS, echo_line, context) as server:
        world.names[ALLOWED_HOST] = (SPLICE_ADDRESS, server[0])
        # The guest trusts only the test PKI: the handshake is with the real server, untouched.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            world.gateway.tls_port,
            ssl=world.pki.client_context(),
            server_hostname=ALLOWED_HOST,
            local_addr=(GUEST, 0),
        )
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"
        writer.close()
    assert world.audit.kinds("egress.connect") == [{"name": ALLOWED_HOST, "port": 443}]


async def test_a_disallowed_or_spoofed_sni_is_refused_and_audited(world: World) -> None:
    sandbox(world, {ALLOWED_HOST})
    async with listening(SPLICE_ADDRESS, echo_line) as server:
        # evil.test resolves to the allowed server's address: the SNI alone decides.
        world.names[ALLOWED_HOST] = world.names["evil.test"] = (SPLICE_ADDRESS, server[0])
        assert await exchange(world.gateway.tls_port, client_hello("evil.test")) == b""
        assert server[1] == 0
    assert world.audit.kinds("egress.deny") == [
        {"name": "evil.test", "port": 443, "reason": "name not allowed"}
    ]
    assert world.gateway.counters.denies == 1


async def test_an_allowed_name_resolving_into_closed_ranges_is_refused(world: World) -> None:
    policy = CompiledPolicy.from_policy(EgressPolicy(allow=("metadata.test", "local.test")))
    world.peers[GUEST] = make_peer(policy)
    async with listening("127.0.0.1", echo_line) as local:
        world.names["metadata.test"] = ("169.254.169.254", 443)
        world.names["local.test"] = ("127.0.0.1", local[0])
        for name in ("metadata.test", "local.test"):
            assert await exchange(world.gateway.tls_port, client_hello(name)) == b""
        literal = b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
        assert (await exchange(world.gateway.http_port, literal)).startswith(b"HTTP/1.1 403 ")
        assert local[1] == 0
    assert [(d["name"], d["reason"]) for d in world.audit.kinds("egress.deny")] == [
        ("metadata.test", "resolves only to closed addresses"),
        ("local.test", "resolves only to closed addresses"),
        ("169.254.169.254", "name not allowed"),
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x16\x03\x01\x00\x05hello", "not a ClientHello"),
        (b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "not a TLS handshake record"),
        (client_hello(None), "no server_name extension"),
        (client_hello(ALLOWED_HOST)[:40], "no ClientHello in time"),
    ],
)
async def test_malformed_client_hellos_are_refused_cleanly(
    world: World, data: bytes, reason: str
) -> None:
    sandbox(world, {ALLOWED_HOST})
    assert await exchange(world.gateway.tls_port, data) == b""
    [denied] = world.audit.kinds("egress.deny")
    assert reason in str(denied["reason"])


# --- plain HTTP egress -------------------------------------------------------------------------


async def test_plain_http_to_an_allowed_host_is_spliced_with_half_close(world: World) -> None:
    sandbox(world, {"web.test"})
    async with listening(PLAIN_ADDRESS, echo_until_eof) as server:
        world.names["web.test"] = (PLAIN_ADDRESS, server[0])
        head = b"POST /upload HTTP/1.0\r\nHost: web.test\r\nContent-Length: 5\r\n\r\nhello"
        answer = await exchange(world.gateway.http_port, head, eof=True)
    assert answer.endswith(b"got %d bytes" % len(head))
    assert world.audit.kinds("egress.connect") == [{"name": "web.test", "port": 80}]


async def test_a_quiet_splice_is_closed_after_the_idle_timeout(world: World) -> None:
    world.gateway.limits = dataclasses.replace(world.gateway.limits, idle_timeout_s=0.3)
    sandbox(world, {"web.test"})

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with listening(PLAIN_ADDRESS, silent) as server:
        world.names["web.test"] = (PLAIN_ADDRESS, server[0])
        started = asyncio.get_running_loop().time()
        answer = await exchange(
            world.gateway.http_port, b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n"
        )
        assert answer == b""
        assert asyncio.get_running_loop().time() - started < 4


async def test_plain_http_to_a_disallowed_host_is_a_403(world: World) -> None:
    sandbox(world, {"web.test"})
    async with guest_http(world) as guest:
        answer = await guest.get("/", headers={"Host": "evil.test"})
    assert answer.status_code == 403
    assert "evil.test is not allowed" in answer.text
    assert world.audit.kinds("egress.deny") == [
        {"name": "evil.test", "port": 80, "reason": "name not allowed"}
    ]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: 10.0.0.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: 10.0.0.1\r\nX: a\rInjected: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: web.test\r\nHost: 10.0.0.1\r\n\r\n", 400),
        (b"GET http://web.test/ HTTP/1.1\r\nHost: web.test\r\n\r\n", 400),
        (b"CONNECT web.test:443 HTTP/1.1\r\nHost: web.test\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: we b.test\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400),
    ],
)
async def test_hostile_heads_are_refused_cleanly(world: World, head: bytes, status: int) -> None:
    sandbox(world, {"web.test"})
    answer = await exchange(world.gateway.http_port, head)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    assert world.gateway.counters.egress_connects == 0


async def test_a_slow_head_is_cut_off(world: World) -> None:
    sandbox(world, set(), world.secret())
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", world.gateway.http_port, local_addr=(GUEST, 0)
    )
    writer.write(b"GET /s/OPENAI_API_KEY/ HTTP/1.1\r\nHost: 10.0.0.1\r\n")
    async with asyncio.timeout(4):  # the test world's head timeout is 1 s
        assert await reader.read() == b""
    writer.close()
    assert world.upstream.seen == []


# --- who may connect, and shutdown -------------------------------------------------------------


async def test_a_source_that_is_no_sandbox_is_closed_unheard(world: World) -> None:
    sandbox(world, {ALLOWED_HOST}, world.secret())
    head = b"GET /s/OPENAI_API_KEY/ HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n"
    assert await exchange(world.gateway.http_port, head, source="127.0.0.9") == b""
    assert world.gateway.counters.denies == 1
    assert world.audit.entries == []
    assert world.upstream.seen == []


async def test_each_sandbox_has_a_connection_cap(world: World) -> None:
    world.gateway.limits = dataclasses.replace(world.gateway.limits, max_connections_per_sandbox=1)
    sandbox(world, set(), world.secret())
    _, holder = await asyncio.open_connection(
        "127.0.0.1", world.gateway.http_port, local_addr=(GUEST, 0)
    )
    await asyncio.sleep(0.1)
    assert await exchange(world.gateway.http_port, b"GET / HTTP/1.1\r\n\r\n") == b""
    holder.close()
    assert world.audit.kinds("egress.deny")[0]["reason"] == "too many open connections"


async def test_aclose_ends_open_connections(world: World) -> None:
    sandbox(world, set(), world.secret())
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", world.gateway.http_port, local_addr=(GUEST, 0)
    )
    await asyncio.sleep(0.1)
    assert world.gateway.counters.active == 1
    await world.gateway.aclose()
    async with asyncio.timeout(2):
        assert await reader.read() == b""
    writer.close()
    assert world.gateway.counters.active == 0
