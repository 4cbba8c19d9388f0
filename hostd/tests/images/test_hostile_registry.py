"""Registries that answer with hostile bodies, encodings, redirects and challenges.

The registry is an httpx MockTransport handed to `ImageStore(transport=...)`: nothing leaves the
process, and each test says exactly what every URL answers.
"""

from __future__ import annotations

import gzip
import json
import re
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from isorun_hostd.images import (
    AuthenticationFailed,
    ContentTooLarge,
    DigestMismatch,
    ImageStore,
    InsecureRegistry,
    RegistryCredentials,
    RegistryProtocolError,
)

from tests.fixtures import oci
from tests.fixtures.oci import file
from tests.framework.registry import Registry

MIB = 1 << 20
HOST = "127.0.0.1:5000"
REPO = "isorun/hostile"
REFERENCE = f"{HOST}/{REPO}:1.0"
Handler = Callable[[httpx.Request], httpx.Response]


class FakeRegistry:
    """Answers by URL (without query); records every request; 404 for anything else."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[httpx.Request] = []
        layer = oci.layer([file("hello", "hi\n")])
        config = oci.canonical_json(oci.image_config([layer.diff_id]))
        self.layer_digest = oci.sha256(layer.data)
        manifest = oci.canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": oci.OCI_MANIFEST,
                "config": {
                    "mediaType": oci.OCI_CONFIG,
                    "digest": oci.sha256(config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": layer.media_type,
                        "digest": self.layer_digest,
                        "size": len(layer.data),
                    }
                ],
            }
        )
        self.layer = layer.data
        self.blob(f"http://{HOST}/v2/{REPO}/manifests/1.0", manifest, oci.OCI_MANIFEST)
        self.blob(f"http://{HOST}/v2/{REPO}/blobs/{oci.sha256(config)}", config)
        self.blob(f"http://{HOST}/v2/{REPO}/blobs/{self.layer_digest}", layer.data)

    def blob(self, url: str, data: bytes, media_type: str = "application/octet-stream") -> None:
        self.routes[url] = lambda _: raw(data, **{"content-type": media_type})

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get(str(request.url.copy_with(query=None)))
        return route(request) if route is not None else httpx.Response(404)

    def store(self, tmp_path: Path, **options: object) -> ImageStore:
        transport = httpx.MockTransport(self.handle)
        return ImageStore(tmp_path / "cache", transport=transport, **options)  # type: ignore[arg-type]


def raw(data: bytes, **headers: str) -> httpx.Response:
    """A 200 whose body is streamed as is, like a real transport's (content= would decode it)."""
    return httpx.Response(200, stream=httpx.ByteStream(data), headers=headers)


def gzip_bomb(size: int) -> bytes:
    return gzip.compress(bytes(size), compresslevel=1)


def bearer_challenge(realm: str) -> Handler:
    header = f'Bearer realm="{realm}",service="fake",scope="repository:{REPO}:pull"'
    return lambda request: (
        httpx.Response(401, headers={"www-authenticate": header})
        if "authorization" not in request.headers
        else httpx.Response(500)
    )


async def test_requests_ask_for_identity(registry: Registry, tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    inner = httpx.AsyncHTTPTransport()

    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await inner.handle_async_request(request)

    store = ImageStore(tmp_path / "cache", transport=httpx.MockTransport(record))
    await store.pull(registry.ref("busybox:1.0"))
    await inner.aclose()
    assert seen
    assert {request.headers.get("accept-encoding") for request in seen} == {"identity"}


async def test_encoded_manifest_refused_without_inflating(tmp_path: Path) -> None:
    fake = FakeRegistry()
    bomb = gzip_bomb(64 * MIB)
    fake.routes[f"http://{HOST}/v2/{REPO}/manifests/1.0"] = lambda _: raw(
        bomb, **{"content-encoding": "gzip", "content-type": oci.OCI_MANIFEST}
    )
    store = fake.store(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(RegistryProtocolError) as raised:
            await store.pull(REFERENCE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(raised.value) == (
        f"image {REFERENCE}: registry {HOST} answered badly: manifest 1.0 came with "
        "Content-Encoding 'gzip' (only identity is accepted)"
    )
    assert peak < 8 * MIB


async def test_encoded_token_refused(tmp_path: Path) -> None:
    fake = FakeRegistry()
    realm = "http://127.0.0.1:5001/token"
    fake.routes[f"http://{HOST}/v2/{REPO}/manifests/1.0"] = bearer_challenge(realm)
    bomb = gzip_bomb(64 * MIB)
    fake.routes[realm] = lambda _: raw(bomb, **{"content-encoding": "gzip"})
    with pytest.raises(RegistryProtocolError, match=r"token response from \S+ came with Content"):
        await fake.store(tmp_path).pull(REFERENCE)


async def test_token_read_stops_at_the_cap(tmp_path: Path) -> None:
    fake = FakeRegistry()
    realm = "http://127.0.0.1:5001/token"
    fake.routes[f"http://{HOST}/v2/{REPO}/manifests/1.0"] = bearer_challenge(realm)
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(64):
            sent.append(MIB)
            yield b" " * MIB

    fake.routes[realm] = lambda _: httpx.Response(200, content=endless())
    expected = f"token response from {re.escape(realm)} is larger than"
    with pytest.raises(ContentTooLarge, match=expected):
        await fake.store(tmp_path).pull(REFERENCE)
    assert len(sent) <= 2


async def test_blob_verified_on_raw_bytes(tmp_path: Path) -> None:
    """A layer sent gzip-encoded is checked as sent, never inflated first."""
    fake = FakeRegistry()
    encoded = gzip.compress(fake.layer)
    fake.routes[f"http://{HOST}/v2/{REPO}/blobs/{fake.layer_digest}"] = lambda _: raw(
        encoded, **{"content-encoding": "gzip"}
    )
    with pytest.raises((DigestMismatch, ContentTooLarge)) as raised:
        await fake.store(tmp_path).pull(REFERENCE)
    assert fake.layer_digest in str(raised.value)


async def test_fake_registry_pulls(tmp_path: Path) -> None:
    disk = await FakeRegistry().store(tmp_path).pull(REFERENCE)
    assert disk.size_bytes > 0
    assert json.loads(disk.disk_path.with_suffix(".json").read_text())["reference"] == REFERENCE


def redirect(location: str) -> Handler:
    return lambda _: httpx.Response(307, headers={"location": location})


async def test_redirect_targets_401_is_not_answered(tmp_path: Path) -> None:
    """Registry A redirects to host B, whose challenge names B's realm: A's password stays home."""
    fake = FakeRegistry()
    other = "http://127.0.0.2:5000"
    fake.routes[f"http://{HOST}/v2/{REPO}/manifests/1.0"] = redirect(f"{other}/m")
    fake.routes[f"{other}/m"] = bearer_challenge(f"{other}/token")
    fake.routes[f"{other}/token"] = lambda _: raw(b'{"token": "stolen"}')
    store = fake.store(tmp_path, credentials={HOST: RegistryCredentials("user", "secret")})
    with pytest.raises(AuthenticationFailed) as raised:
        await store.pull(REFERENCE)
    assert str(raised.value) == (
        f"image {REFERENCE}: registry {HOST} refused access: 401 from {other}/m after a "
        "redirect is not answered: credentials are only for the registry itself"
    )
    assert [request.url.path for request in fake.requests] == [f"/v2/{REPO}/manifests/1.0", "/m"]
    assert not any("authorization" in request.headers for request in fake.requests)


PUBLIC = "registry.example.test"
PUBLIC_REFERENCE = f"{PUBLIC}/{REPO}:1.0"


@pytest.mark.parametrize("via", ["redirect", "realm"])
async def test_public_registry_cannot_reach_plain_http_loopback(tmp_path: Path, via: str) -> None:
    fake = FakeRegistry()
    target = f"http://{HOST}/v2/{REPO}/manifests/1.0"
    public = f"https://{PUBLIC}/v2/{REPO}/manifests/1.0"
    fake.routes[public] = redirect(target) if via == "redirect" else bearer_challenge(target)
    with pytest.raises(InsecureRegistry) as raised:
        await fake.store(tmp_path).pull(PUBLIC_REFERENCE)
    assert str(raised.value) == (
        f"image {PUBLIC_REFERENCE}: refusing plain HTTP to {target}: loopback, but registry "
        f"{PUBLIC} is not loopback or configured insecure"
    )
    assert [str(request.url) for request in fake.requests] == [public]


async def test_insecure_registry_may_use_loopback(tmp_path: Path) -> None:
    fake = FakeRegistry()
    insecure = "203.0.113.7:5000"
    for url in list(fake.routes):
        fake.routes[url.replace(HOST, insecure)] = redirect(url)
    store = fake.store(tmp_path, insecure_registries=[insecure])
    disk = await store.pull(f"{insecure}/{REPO}:1.0")
    assert disk.size_bytes > 0
