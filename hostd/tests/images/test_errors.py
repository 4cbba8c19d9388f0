"""Failures name the reference and the problem, and leave nothing in the cache."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_support import RecordingTransport, leftovers
from isorun_hostd.images import (
    AuthenticationFailed,
    CorruptLayer,
    DigestMismatch,
    ImageStore,
    InsecureRegistry,
    ManifestUnknown,
    RegistryCredentials,
    RegistryUnreachable,
)

from tests.fixtures.build import FixtureImage, build_light
from tests.framework.registry import PASSWORD, USERNAME, Registry, run_registry

TEST_NET = "203.0.113.1"


def busybox_image() -> FixtureImage:
    return next(image for image in build_light() if image.name_tag == "busybox:1.0")


async def test_wrong_digest(
    registry: Registry, store: ImageStore, cache_root: Path, scratch: Path
) -> None:
    digest = "sha256:" + "0" * 64
    reference = f"{registry.host}/isorun/busybox@{digest}"
    with pytest.raises(ManifestUnknown) as raised:
        await store.pull(reference)
    assert str(raised.value) == (
        f"image {reference}: manifest {digest} not found on {registry.host} (wrong tag or digest?)"
    )
    assert leftovers(cache_root, scratch) == []


async def test_missing_tag(
    registry: Registry, store: ImageStore, cache_root: Path, scratch: Path
) -> None:
    reference = registry.ref("busybox:9.9")
    with pytest.raises(ManifestUnknown, match=r"manifest 9\.9 not found"):
        await store.pull(reference)
    assert leftovers(cache_root, scratch) == []


async def test_unreachable_registry(store: ImageStore, cache_root: Path, scratch: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        reference = f"127.0.0.1:{port}/isorun/busybox:1.0"
        with pytest.raises(RegistryUnreachable) as raised:
            await store.pull(reference)
    assert str(raised.value).startswith(
        f"image {reference}: registry 127.0.0.1:{port} is unreachable: ConnectError"
    )
    assert raised.value.retryable
    assert leftovers(cache_root, scratch) == []


@pytest.fixture(scope="module")
def basic_registry() -> Iterator[Registry]:
    with run_registry("basic") as running:
        running.push_image(busybox_image())
        yield running


@pytest.fixture(scope="module")
def token_registry() -> Iterator[Registry]:
    with run_registry("token") as running:
        running.push_image(busybox_image())
        yield running


async def test_basic_auth(basic_registry: Registry, tmp_path: Path) -> None:
    credentials = {basic_registry.host: RegistryCredentials(USERNAME, PASSWORD)}
    store = ImageStore(tmp_path / "cache", credentials=credentials)
    disk = await store.pull(basic_registry.ref("busybox:1.0"))
    assert disk.manifest_digest == basic_registry.pushed["busybox:1.0"]


@pytest.mark.parametrize(
    ("credentials", "detail"),
    [
        (None, "credentials required (Basic auth)"),
        (RegistryCredentials(USERNAME, "wrong"), "bad credentials (401 after authenticating)"),
    ],
)
async def test_basic_auth_refused(
    basic_registry: Registry, tmp_path: Path, credentials: RegistryCredentials | None, detail: str
) -> None:
    cache = tmp_path / "cache"
    store = ImageStore(
        cache, credentials={basic_registry.host: credentials} if credentials else None
    )
    reference = basic_registry.ref("busybox:1.0")
    with pytest.raises(AuthenticationFailed) as raised:
        await store.pull(reference)
    assert str(raised.value) == (
        f"image {reference}: registry {basic_registry.host} refused access: {detail}"
    )
    assert leftovers(cache, cache / "tmp") == []


async def test_bearer_anonymous_and_token_reuse(token_registry: Registry, tmp_path: Path) -> None:
    assert token_registry.token_server is not None
    token_registry.token_server.requests.clear()
    store = ImageStore(tmp_path / "cache")
    reference = token_registry.ref("busybox:1.0")
    disk = await store.pull(reference)
    await store.pull(reference)
    assert disk.manifest_digest == token_registry.pushed["busybox:1.0"]
    # One token for the scope, reused by every later request of both pulls.
    assert token_registry.token_server.requests == [("", "repository:isorun/busybox:pull")]


async def test_bearer_with_credentials(token_registry: Registry, tmp_path: Path) -> None:
    assert token_registry.token_server is not None
    token_registry.token_server.requests.clear()
    credentials = {token_registry.host: RegistryCredentials(USERNAME, PASSWORD)}
    store = ImageStore(tmp_path / "cache", credentials=credentials)
    await store.pull(token_registry.ref("busybox:1.0"))
    assert token_registry.token_server.requests == [(USERNAME, "repository:isorun/busybox:pull")]


async def test_bearer_bad_credentials(token_registry: Registry, tmp_path: Path) -> None:
    assert token_registry.token_server is not None
    credentials = {token_registry.host: RegistryCredentials(USERNAME, "wrong")}
    store = ImageStore(tmp_path / "cache", credentials=credentials)
    reference = token_registry.ref("busybox:1.0")
    with pytest.raises(AuthenticationFailed) as raised:
        await store.pull(reference)
    assert str(raised.value) == (
        f"image {reference}: registry {token_registry.host} refused access: token server "
        f"{token_registry.token_server.realm} refused the configured credentials (401)"
    )


async def test_plain_http_realm_refused_before_any_io(
    tmp_path: Path, transport: RecordingTransport
) -> None:
    realm = f"http://{TEST_NET}/token"
    with run_registry("token", token_realm=realm) as running:
        store = ImageStore(tmp_path / "cache", transport=transport)
        reference = running.ref("busybox:1.0")
        with pytest.raises(InsecureRegistry) as raised:
            await store.pull(reference)
    assert str(raised.value) == (
        f"image {reference}: refusing plain HTTP to {realm}: not loopback, not configured insecure"
    )
    assert all(request.url.host == "127.0.0.1" for request in transport.requests)
    assert len(transport.requests) == 1  # the manifest request that got the challenge


async def test_insecure_registry_allowed_when_configured(
    tmp_path: Path, transport: RecordingTransport
) -> None:
    """Configured insecure means plain HTTP is used and allowed; the request never leaves."""
    realm = f"http://{TEST_NET}/token"
    with run_registry("token", token_realm=realm) as running:
        store = ImageStore(tmp_path / "cache", transport=transport, insecure_registries=[TEST_NET])
        transport.unreachable_hosts.add(TEST_NET)
        with pytest.raises(RegistryUnreachable, match=f"token server {realm}"):
            await store.pull(running.ref("busybox:1.0"))
    assert [request.url.host for request in transport.requests] == ["127.0.0.1", TEST_NET]


async def test_corrupt_blob(tmp_path: Path) -> None:
    with run_registry() as running:
        digest = running.push_image(busybox_image())
        manifest = running.blob_path(digest).read_bytes()
        layer = json.loads(manifest)["layers"][0]["digest"]
        running.corrupt_blob(layer)
        cache = tmp_path / "cache"
        store = ImageStore(cache)
        reference = running.ref("busybox:1.0")
        with pytest.raises(DigestMismatch) as raised:
            await store.pull(reference)
    message = str(raised.value)
    assert message.startswith(f"image {reference}: blob (")
    assert f"digest mismatch: expected {layer}, got sha256:" in message
    assert leftovers(cache, cache / "tmp") == []
    assert not (cache / "blobs" / "sha256" / layer.removeprefix("sha256:")).exists()


async def test_corrupt_manifest(tmp_path: Path) -> None:
    with run_registry() as running:
        digest = running.push_image(busybox_image())
        # Still valid JSON, so the registry serves it: the config size gains one.
        manifest = running.blob_path(digest).read_bytes()
        start = manifest.index(b'"size":')
        end = start + len(b'"size":') + 2
        old = manifest[start:end]
        new = old[:-1] + (b"1" if old[-1:] == b"0" else b"0")
        running.tamper_blob(digest, old, new)
        store = ImageStore(tmp_path / "cache")
        reference = running.ref("busybox:1.0")
        with pytest.raises(DigestMismatch) as raised:
            await store.pull(reference)
    assert str(raised.value).startswith(
        f"image {reference}: manifest (Docker-Content-Digest) digest mismatch: expected {digest}"
    )


async def test_diff_id_mismatch(
    registry: Registry, store: ImageStore, cache_root: Path, scratch: Path
) -> None:
    reference = registry.ref("corrupt:diffid")
    with pytest.raises(CorruptLayer, match="does not match diff_id") as raised:
        await store.pull(reference)
    assert str(raised.value).startswith(f"image {reference}: layer sha256:")
    assert leftovers(cache_root, scratch) == []
