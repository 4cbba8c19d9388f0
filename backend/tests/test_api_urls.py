"""Public URLs over the edge, to a web server in a real python sandbox (issue 7).

```
site      one sandbox running guest/web.py on port 8000; a public URL to it
http      HTTP/1.1, HTTP/2 and HTTP/3 through the edge: every method, bodies streamed both ways, the
          token made a cookie and kept from the guest, server-sent events as they come
ws        a WebSocket echo through the edge
refused   no token, a forged or moved one, an expired one, a private URL without a key or with
          another tenant's, another tenant asking for a URL, a port nobody listens on (502)
wake      a hibernated sandbox's URL resumes it
count     requests are counted on the sandbox's usage
flood     a huge answer read slowly does not pile up in the backend's memory
browser   Debian's chromium renders the page (its script fetches from the sandbox)
cert      a supplied certificate is the one the edge serves
```
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets
from api_support import assert_problem, auth, sh
from h3_client import h3_request
from isorun_backend.core.config import BackendSettings
from isorun_backend.edge.certs import self_signed
from isorun_backend.edge.server import edge_serving
from isorun_backend.services import Services
from isorun_backend.services.urls import FLUSH_S

from tests.framework.registry import free_port

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]

GUEST_WEB = Path(__file__).parent / "guest" / "web.py"
PORT = 8000


async def make_url(
    client: httpx.AsyncClient, key: str, sandbox_id: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/sandboxes/{sandbox_id}/urls", json={"port": PORT, **body}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    url: dict[str, Any] = response.json()
    return url


@pytest.fixture
def tls(settings: BackendSettings) -> ssl.SSLContext:
    """Trusts the edge's self-signed certificate (made when the app started). One per test:
    httpx sets its ALPN protocols on the context it is given, so an HTTP/2 client's context
    would make a WebSocket client ask for h2."""
    return ssl.create_default_context(cafile=settings.data_dir / "edge" / "edge-cert.pem")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site(client: httpx.AsyncClient, key: str) -> AsyncIterator[str]:
    """A python sandbox serving guest/web.py on port 8000."""
    response = await client.post("/v1/sandboxes", json={"image": "python"}, headers=auth(key))
    assert response.status_code == 201, response.text
    sandbox_id: str = response.json()["id"]
    written = await client.put(
        f"/v1/sandboxes/{sandbox_id}/files/content",
        params={"path": "/srv/web.py"},
        content=GUEST_WEB.read_bytes(),
        headers=auth(key),
    )
    assert written.status_code in (200, 201), written.text
    await sh(
        client,
        key,
        sandbox_id,
        f"nohup python3 /srv/web.py {PORT} >/tmp/web.log 2>&1 & "
        f"for i in $(seq 100); do python3 -c 'import socket; socket.create_connection("
        f'("127.0.0.1", {PORT}))\' 2>/dev/null && exit 0; sleep 0.1; done; exit 1',
    )
    yield sandbox_id
    await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))


def edge_client(tls: ssl.SSLContext, *, http2: bool = False) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=tls, http2=http2, trust_env=False, timeout=60)


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
async def test_a_guest_server_through_its_url(
    client: httpx.AsyncClient, key: str, site: str, tls: ssl.SSLContext, http2: bool
) -> None:
    url = await make_url(client, key, site)
    assert url["origin"].startswith(f"https://{PORT}-{site}.isorun.localhost:")
    assert url["url"] == f"{url['origin']}/?isorun_token={url['token']}" and url["public"]
    async with edge_client(tls, http2=http2) as edge:
        page = await edge.get(url["url"])
        assert page.status_code == 200, page.text
        assert page.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert "fetch('/data.json')" in page.text
        assert 'h3=":' in page.headers["alt-svc"], "HTTP/3 is not advertised"
        # The token became a cookie of this host: the page's own requests need nothing more.
        assert (await edge.get(f"{url['origin']}/data.json")).json() == {"answer": 42}

        async def upload() -> AsyncIterator[bytes]:
            for _ in range(16):
                yield b"y" * 65536

        seen = (
            await edge.post(
                f"{url['origin']}/request?a=1&b=%20two",
                content=upload(),
                headers={"X-Isorun-Token": url["token"], "X-Forwarded-For": "198.51.100.7"},
            )
        ).json()
        assert seen["method"] == "POST" and seen["target"] == "/request?a=1&b=%20two"
        assert seen["length"] == 16 * 65536
        assert seen["sha256"] == hashlib.sha256(b"y" * 16 * 65536).hexdigest()
        names = {name for name, _ in seen["headers"]}
        assert not names & {"x-isorun-token", "x-isorun-key"}, seen["headers"]
        cookies = [value for name, value in seen["headers"] if name == "cookie"]
        assert not any("isorun_token" in value for value in cookies), cookies
        forwarded = dict(seen["headers"])
        assert forwarded["x-forwarded-proto"] == "https"
        assert forwarded["x-forwarded-for"] in ("127.0.0.1", "::1"), "a client's claim passed"
        assert forwarded["host"] == url["origin"].removeprefix("https://")
        for method in ("PUT", "PATCH", "DELETE", "OPTIONS"):
            answer = await edge.request(method, f"{url['origin']}/request", content=b"m")
            assert answer.json()["method"] == method
        head = await edge.head(f"{url['origin']}/request")
        assert head.status_code == 200 and head.content == b""

        # Server-sent events arrive as they are sent, not when the stream ends.
        started = time.monotonic()
        async with edge.stream("GET", f"{url['origin']}/events") as events:
            assert events.headers["content-type"] == "text/event-stream"
            arrivals = []
            async for line in events.aiter_lines():
                if line.startswith("data: "):
                    arrivals.append((line, time.monotonic() - started))
        assert [line for line, _ in arrivals] == [f"data: tick {n}" for n in range(1, 6)]
        assert arrivals[-1][1] - arrivals[0][1] >= 1.0, arrivals


async def test_http3_through_its_url(
    client: httpx.AsyncClient, key: str, site: str, settings: BackendSettings
) -> None:
    url = await make_url(client, key, site)
    authority = url["origin"].removeprefix("https://")
    assert settings.url_listen is not None
    host, _, port = settings.url_listen.rpartition(":")
    token = [(b"x-isorun-token", url["token"].encode())]
    cafile = settings.data_dir / "edge" / "edge-cert.pem"
    answer = await h3_request(
        (host, int(port)), authority, "/data.json", cafile=cafile, headers=token
    )
    assert answer.status == 200 and answer.body == b'{"answer": 42}'
    body = bytes(range(256)) * 1000
    posted = await h3_request(
        (host, int(port)),
        authority,
        "/request?over=h3",
        cafile=cafile,
        method="POST",
        headers=token,
        body=body,
    )
    seen = json.loads(posted.body)
    assert seen["target"] == "/request?over=h3"
    assert seen["sha256"] == hashlib.sha256(body).hexdigest()
    refused = await h3_request((host, int(port)), authority, "/data.json", cafile=cafile)
    assert refused.status == 401


async def test_a_websocket_through_its_url(
    client: httpx.AsyncClient, key: str, site: str, tls: ssl.SSLContext
) -> None:
    url = await make_url(client, key, site)
    address = url["origin"].replace("https://", "wss://") + "/ws"
    async with websockets.connect(
        address, ssl=tls, additional_headers={"X-Isorun-Token": url["token"]}, proxy=None
    ) as socket:
        await socket.send("hello")
        assert await socket.recv() == "hello"
        blob = bytes(range(256)) * 400
        await socket.send(blob)
        assert await socket.recv() == blob
        await socket.ping()
    assert socket.close_code == 1000


async def test_refused_urls_say_why(
    client: httpx.AsyncClient, key: str, other_key: str, site: str, tls: ssl.SSLContext
) -> None:
    url = await make_url(client, key, site)
    origin, token = url["origin"], url["token"]
    async with edge_client(tls) as edge:
        missing = await edge.get(f"{origin}/data.json", headers={"Accept": "text/html"})
        assert missing.status_code == 401 and "needs its token" in missing.text
        assert missing.headers["content-type"].startswith("text/html")
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        bad = await edge.get(f"{origin}/?isorun_token={forged}")
        assert bad.status_code == 401 and "not valid" in bad.json()["detail"]
        moved = origin.replace(f"https://{PORT}-", f"https://{PORT + 1}-")
        assert (await edge.get(f"{moved}/?isorun_token={token}")).status_code == 401

        short = await make_url(client, key, site, expires_in_s=1)
        await asyncio.sleep(1.5)
        expired = await edge.get(short["url"])
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]

        private = await make_url(client, key, site, public=False)
        assert (await edge.get(private["url"])).status_code == 401
        theirs = await edge.get(private["url"], headers={"X-Isorun-Key": other_key})
        assert theirs.status_code == 403
        ours = await edge.get(private["url"], headers={"X-Isorun-Key": key})
        assert ours.status_code == 200

        nobody = await make_url(client, key, site, port=PORT + 1)
        closed = await edge.get(nobody["url"], headers={"Accept": "text/html"})
        assert closed.status_code == 502
        assert f"Nothing accepts connections on port {PORT + 1}" in closed.text

        stranger = origin.replace(f"{site}.", "nothing.")
        assert (await edge.get(f"{stranger}/", headers={"Host": "example.test"})).status_code == 404

    other = await client.post(
        f"/v1/sandboxes/{site}/urls", json={"port": PORT}, headers=auth(other_key)
    )
    assert_problem(other, 404, "sandbox_not_found")
    too_long = await client.post(
        f"/v1/sandboxes/{site}/urls",
        json={"port": PORT, "expires_in_s": 10**8},
        headers=auth(key),
    )
    assert too_long.status_code == 400, too_long.text


async def counted(client: httpx.AsyncClient, key: str, sandbox_id: str) -> dict[str, Any]:
    """The sandbox once the URL requests counted so far are written (batches, every FLUSH_S)."""
    await asyncio.sleep(FLUSH_S * 1.5)
    sandbox: dict[str, Any] = (
        await client.get(f"/v1/sandboxes/{sandbox_id}", headers=auth(key))
    ).json()
    return sandbox


async def test_a_url_wakes_a_hibernated_sandbox_and_requests_are_counted(
    client: httpx.AsyncClient, key: str, site: str, tls: ssl.SSLContext
) -> None:
    url = await make_url(client, key, site)
    before = await counted(client, key, site)
    hibernated = await client.post(f"/v1/sandboxes/{site}/hibernate", headers=auth(key))
    assert hibernated.status_code == 200, hibernated.text
    async with edge_client(tls) as edge:
        woken = await edge.get(
            f"{url['origin']}/data.json", headers={"X-Isorun-Token": url["token"]}
        )
        assert woken.status_code == 200 and woken.json() == {"answer": 42}
        await edge.get(f"{url['origin']}/data.json", headers={"X-Isorun-Token": url["token"]})
        # Refused requests are not counted.
        assert (await edge.get(f"{url['origin']}/data.json")).status_code == 401
    after = await counted(client, key, site)
    assert after["state"] == "running"
    assert after["usage"]["url_requests"] == before["usage"]["url_requests"] + 2
    report = (await client.get("/v1/usage", headers=auth(key))).json()
    assert report["url_requests"] >= after["usage"]["url_requests"]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_huge_answer_read_slowly_stays_out_of_host_memory(
    client: httpx.AsyncClient, key: str, site: str, tls: ssl.SSLContext
) -> None:
    url = await make_url(client, key, site)
    mib = 96
    async with edge_client(tls) as edge:
        before = rss_mib()
        async with edge.stream(
            "GET", f"{url['origin']}/big?mib={mib}", headers={"X-Isorun-Token": url["token"]}
        ) as big:
            # Unread, the answer could only pile up somewhere between guest and client.
            await asyncio.sleep(4)
            grown = rss_mib() - before
            received = 0
            async for chunk in big.aiter_raw():
                received += len(chunk)
    assert received == mib << 20
    assert grown < 32, f"the backend grew by {grown:.0f} MiB while a client did not read"


async def test_chromium_renders_a_page_from_the_sandbox(
    client: httpx.AsyncClient, key: str, site: str
) -> None:
    browser = shutil.which("chromium")
    assert browser, "Debian's chromium is not installed (scripts/setup.sh installs it)"
    url = await make_url(client, key, site)
    process = await asyncio.create_subprocess_exec(
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--ignore-certificate-errors",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url["url"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 90)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    dom = out.decode()
    assert '<p id="out">rendered 42</p>' in dom, (dom[-2000:], err.decode()[-2000:])


async def test_the_edge_serves_a_supplied_certificate(
    services: Services, settings: BackendSettings, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path, "sandboxes.example.test")
    supplied = settings.model_copy(
        update={
            "url_listen": f"127.0.0.1:{free_port()}",
            "url_cert_file": cert,
            "url_key_file": key,
        }
    )
    assert supplied.url_listen is not None
    host, _, port = supplied.url_listen.rpartition(":")
    async with edge_serving(services, supplied):
        tls = ssl.create_default_context(cafile=cert)
        tls.check_hostname = False
        _, writer = await asyncio.open_connection(host, int(port), ssl=tls)
        peer = writer.get_extra_info("ssl_object").getpeercert()
        writer.close()
        await writer.wait_closed()
    names = [value for kind, value in peer["subjectAltName"] if kind == "DNS"]
    assert names == ["sandboxes.example.test", "*.sandboxes.example.test"]
