"""`sb.url(port)`: public URLs to a server in a sandbox.

The request and answer plumbing runs against `FakeBackend`; the rest against the real API (`isorun
up`, real VMs, its edge on `up.edge_port`): a python sandbox serves a directory on its loopback
with `python3 -m http.server`, and the URL (sync, async, private, and the one `isorun url`
prints) fetches its listing through the edge, trusting the edge's self-signed certificate.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from isorun import AsyncSandbox, InvalidRequest, Sandbox, SandboxNotFound, SandboxUrl
from isorun.testing import FakeBackend

from tests.framework.guest_servers import serve_folder
from tests.framework.isorun_up import Up

PORT = 8000
SERVE = serve_folder(PORT, "hello-from-the-sandbox.txt")
LISTED = "hello-from-the-sandbox.txt"
# A request through the edge to a VM under TCG on a shared machine.
FETCH_TIMEOUT_S = 120.0


# --- plumbing, over FakeBackend ------------------------------------------------------------------


def test_url_sends_port_expiry_and_publicity_and_parses_the_answer() -> None:
    fake = FakeBackend()
    with Sandbox("python", transport=fake, api_key=fake.api_key) as sb:
        url = sb.url(8080, expires_in=60, public=False)
        assert isinstance(url, SandboxUrl)
        assert url.origin == f"https://8080-{sb.id}.isorun.localhost"
        assert str(url) == url.url == f"{url.origin}/?isorun_token={url.token}"
        assert (url.port, url.public) == (8080, False)
        assert url.expires_at - datetime.now(UTC) <= timedelta(seconds=60)
        assert sb.url(8080).public is True


async def test_async_url_and_errors_map_to_the_sdk_classes() -> None:
    fake = FakeBackend()
    async with AsyncSandbox.create("python", transport=fake, api_key=fake.api_key) as sb:
        url = await sb.url(3000)
        assert (url.port, url.public, str(url)) == (3000, True, url.url)
        with pytest.raises(InvalidRequest):
            await sb.url(70000)
        gone = await AsyncSandbox.connect(sb.id, transport=fake, api_key=fake.api_key)
        await gone.destroy()
        with pytest.raises(SandboxNotFound):
            await sb.url(3000)


# --- real VMs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(up: Up) -> Iterator[Sandbox]:
    """A python sandbox serving /srv/site on 127.0.0.1:8000 inside it."""
    with Sandbox("python", memory_mib=512, api_url=up.url, api_key=up.key) as sandbox:
        sandbox.exec(SERVE, timeout_s=180).check()
        yield sandbox


def fetch(up: Up, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """GET `url` through the edge, trusting its self-signed certificate and nothing else."""
    tls = ssl.create_default_context(cafile=up.data_dir / "edge" / "edge-cert.pem")
    with httpx.Client(verify=tls, trust_env=False, timeout=FETCH_TIMEOUT_S) as http:
        return http.get(url, headers=headers)


@pytest.mark.vm
def test_a_public_url_reaches_the_server_on_the_sandboxs_loopback(up: Up, served: Sandbox) -> None:
    url = served.url(PORT)
    assert url.origin == f"https://{PORT}-{served.id}.isorun.localhost:{up.edge_port}"
    answer = fetch(up, str(url))
    assert answer.status_code == 200, answer.text
    assert "Directory listing for /" in answer.text and LISTED in answer.text
    # The origin alone is refused; the token as a header lets it in.
    assert fetch(up, url.origin).status_code == 401
    with_header = fetch(up, f"{url.origin}/{LISTED}", {"X-Isorun-Token": url.token})
    assert (with_header.status_code, with_header.text) == (200, "hi\n")


@pytest.mark.vm
def test_a_private_url_needs_an_api_key(up: Up, served: Sandbox) -> None:
    url = served.url(PORT, public=False, expires_in=120)
    assert url.public is False
    assert fetch(up, url.url).status_code == 401
    answer = fetch(up, url.url, {"X-Isorun-Key": up.key})
    assert answer.status_code == 200 and LISTED in answer.text


@pytest.mark.vm
async def test_async_url(up: Up, served: Sandbox) -> None:
    sb = await AsyncSandbox.connect(served.id, api_url=up.url, api_key=up.key)
    try:
        url = await sb.url(PORT, expires_in=300)
    finally:
        await sb.aclose()
    assert url.expires_at - datetime.now(UTC) <= timedelta(seconds=300)
    answer = fetch(up, url.url)
    assert answer.status_code == 200 and LISTED in answer.text


@pytest.mark.vm
def test_cli_prints_a_url_that_works(up: Up, served: Sandbox) -> None:
    printed = up.cli("url", served.id, str(PORT))
    assert printed.returncode == 0, printed.stderr
    answer = fetch(up, printed.stdout.strip())
    assert answer.status_code == 200 and LISTED in answer.text

    as_json = up.cli("url", served.id, str(PORT), "--private", "--expires-in", "60", "--json")
    assert as_json.returncode == 0, as_json.stderr
    url = SandboxUrl.model_validate(json.loads(as_json.stdout))
    assert (url.port, url.public) == (PORT, False)
    assert fetch(up, url.url, {"X-Isorun-Key": up.key}).status_code == 200

    missing = up.cli("url", "sb-000000000000", str(PORT))
    assert missing.returncode == 125 and "sandbox_not_found" in missing.stderr
