"""Pulls from the loopback registry: tags, digests, indexes, whiteouts, the disk and sidecar."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from image_support import RecordingTransport, leftovers
from isorun_hostd.images import ImageDisk, ImageStore, PlatformNotFound, PullProgress

from tests.fixtures.build import WHITEOUT_EXPECTED
from tests.framework.registry import Registry

Extract = Callable[[ImageDisk], Path]


async def test_busybox_by_tag(registry: Registry, store: ImageStore, extract: Extract) -> None:
    reference = registry.ref("busybox:1.0")
    disk = await store.pull(reference)

    digest = registry.pushed["busybox:1.0"]
    assert disk.reference == reference
    assert disk.pinned == f"{registry.host}/isorun/busybox@{digest}"
    assert disk.manifest_digest == digest
    assert disk.disk_path == store.disks / f"{disk.chain_id.removeprefix('sha256:')}.erofs"
    assert disk.size_bytes == disk.disk_path.stat().st_size > 0
    assert disk.config.cmd == ["/bin/sh"]
    assert disk.config.entrypoint is None
    assert disk.config.working_dir == "/"
    assert disk.config.env[0].startswith("PATH=")
    root = extract(disk)
    assert (root / "bin" / "busybox").stat().st_mode & 0o755 == 0o755
    assert (root / "bin" / "sh").readlink() == Path("/bin/busybox")
    assert (root / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    sidecar = json.loads(disk.disk_path.with_suffix(".json").read_text())
    assert sidecar["pinned"] == disk.pinned
    assert sidecar["manifest_digest"] == digest
    assert sidecar["chain_id"] == disk.chain_id
    assert sidecar["config"] == disk.config.model_dump(mode="json")


async def test_busybox_by_digest(registry: Registry, store: ImageStore, extract: Extract) -> None:
    reference = registry.digest_ref("busybox:1.0")
    disk = await store.pull(reference)
    assert disk.manifest_digest == registry.pushed["busybox:1.0"]
    assert (extract(disk) / "etc" / "isorun-fixture").read_text() == "busybox\n"


@pytest.mark.parametrize("name_tag", ["multi:1.0", "multi:docker"])
async def test_index_picks_amd64(
    registry: Registry, store: ImageStore, extract: Extract, name_tag: str
) -> None:
    disk = await store.pull(registry.ref(name_tag))
    assert disk.manifest_digest == registry.pushed[name_tag]
    assert (extract(disk) / "ARCH").read_text() == "amd64\n"


async def test_index_without_amd64(
    registry: Registry, store: ImageStore, cache_root: Path, scratch: Path
) -> None:
    reference = registry.ref("multi:arm64-only")
    with pytest.raises(PlatformNotFound) as raised:
        await store.pull(reference)
    assert str(raised.value) == (
        f"image {reference}: no linux/amd64 image in the index (available: linux/arm64/v8)"
    )
    assert leftovers(cache_root, scratch) == []


@pytest.mark.parametrize("tag", ["1.0", "zstd", "plain"])
async def test_whiteouts(registry: Registry, store: ImageStore, extract: Extract, tag: str) -> None:
    root = extract(await store.pull(registry.ref(f"whiteout:{tag}")))
    for directory, names in WHITEOUT_EXPECTED.items():
        assert sorted(path.name for path in (root / directory).iterdir()) == names, directory
    assert (root / "etc" / "isorun-release").read_text() == "v2\n"
    assert sorted(path.name for path in (root / "opt").iterdir()) == ["data", "gone", "opaque"]


async def test_docker_media_types(registry: Registry, store: ImageStore, extract: Extract) -> None:
    disk = await store.pull(registry.ref("busybox-docker:1.0"))
    assert (extract(disk) / "bin" / "busybox").is_file()


async def test_progress_phases(registry: Registry, store: ImageStore) -> None:
    reports: list[PullProgress] = []
    await store.pull(registry.ref("whiteout:1.0"), progress=reports.append)
    phases = [report.phase for report in reports]
    assert phases[0] == "resolve"
    assert phases.index("fetch") < phases.index("unpack") < phases.index("disk")
    fetched = {r.layer_index: r for r in reports if r.phase == "fetch"}
    assert sorted(fetched) == [0, 1, 2, 3, 4]
    assert all(r.bytes_done == r.bytes_total > 0 for r in fetched.values())
    assert all(r.layer_count == 5 for r in reports if r.phase != "resolve")
    assert reports[-1].phase == "disk"
    assert reports[-1].bytes_done > 0


async def test_cache_hit_skips_work(
    registry: Registry, store: ImageStore, transport: RecordingTransport
) -> None:
    first = await store.pull(registry.ref("busybox:1.0"))
    built_at = first.disk_path.stat().st_mtime_ns
    transport.requests.clear()
    reports: list[PullProgress] = []

    second = await store.pull(registry.ref("busybox:1.0"), progress=reports.append)

    assert second == first
    assert second.disk_path.stat().st_mtime_ns == built_at
    assert transport.paths("/manifests/") == ["/v2/isorun/busybox/manifests/1.0"]
    assert transport.paths("/blobs/") == []
    assert [report.phase for report in reports] == ["resolve"]


async def test_cache_hit_by_digest_needs_no_request(
    registry: Registry, store: ImageStore, transport: RecordingTransport
) -> None:
    await store.pull(registry.ref("busybox:1.0"))
    transport.requests.clear()
    disk = await store.pull(registry.digest_ref("busybox:1.0"))
    assert disk.manifest_digest == registry.pushed["busybox:1.0"]
    assert transport.requests == []


async def test_a_tag_is_resolved_again_once_its_ttl_is_over(
    registry: Registry, cache_root: Path, scratch: Path, transport: RecordingTransport
) -> None:
    store = ImageStore(cache_root, scratch_dir=scratch, transport=transport, tag_ttl_s=0.5)
    reference = registry.ref("busybox:1.0")
    first = await store.pull(reference)
    transport.requests.clear()
    assert await store.pull(reference) == first
    assert transport.requests == []  # within the TTL: no round trip, no TLS handshake
    await asyncio.sleep(0.6)
    assert await store.pull(reference) == first
    assert transport.paths("/manifests/") == ["/v2/isorun/busybox/manifests/1.0"]


async def test_shared_layers_share_the_disk(registry: Registry, store: ImageStore) -> None:
    """busybox-docker has the same layer tar as busybox, so the same ChainID and disk."""
    oci = await store.pull(registry.ref("busybox:1.0"))
    docker = await store.pull(registry.ref("busybox-docker:1.0"))
    assert docker.chain_id == oci.chain_id
    assert docker.disk_path == oci.disk_path
    assert docker.manifest_digest != oci.manifest_digest


async def test_concurrent_pulls_work_once(
    registry: Registry, store: ImageStore, transport: RecordingTransport
) -> None:
    reference = registry.ref("whiteout:1.0")
    disks = await asyncio.gather(*(store.pull(reference) for _ in range(4)))
    assert len({disk.disk_path for disk in disks}) == 1
    blob_gets = transport.paths("/blobs/")
    assert len(blob_gets) == len(set(blob_gets)) == 6  # config + 5 layers, each fetched once
    assert list(store.disks.glob("*.erofs")) == [disks[0].disk_path]
