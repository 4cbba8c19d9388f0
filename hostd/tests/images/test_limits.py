"""Layers that expand past their limits: sizes, entry counts, sparse members, cancellation."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from isorun_hostd.images import ImageStore, LayerTooLarge, SpecialFile, UnpackLimits
from isorun_hostd.images.unpack import Layer, unpack_layers

from tests.fixtures import oci
from tests.fixtures.oci import file
from tests.framework.registry import Registry

REFERENCE = "test/image:1"
MIB = 1 << 20


def raw_layer(tmp_path: Path, tar: bytes, *, name: str = "layer") -> Layer:
    """A zstd layer blob of the tar bytes `tar`, exactly as given."""
    blob = zstandard.ZstdCompressor(level=1).compress(tar)
    path = tmp_path / name
    path.write_bytes(blob)
    return Layer(oci.sha256(blob), path, oci.sha256(tar), len(blob))


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return buffer.getvalue()


def new_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def test_sparse_member_refused(tmp_path: Path) -> None:
    """A PAX sparse member with no data would read back as 8 MiB of zeros."""
    info = tarfile.TarInfo("bomb")
    info.pax_headers = {"GNU.sparse.map": "0,0", "GNU.sparse.size": str(8 * MIB)}
    layer = raw_layer(tmp_path, tar_of((info, b"")))
    root = new_root(tmp_path)
    with pytest.raises(SpecialFile, match="'bomb' is a GNU sparse file"):
        unpack_layers(REFERENCE, root, [layer])
    assert not (root / "bomb").exists()


def test_byte_limit_over_all_layers(tmp_path: Path) -> None:
    first = raw_layer(tmp_path, oci.tar_bytes([file("a", b"x" * MIB)]), name="l0")
    second = raw_layer(tmp_path, oci.tar_bytes([file("b", b"y" * MIB)]), name="l1")
    limits = UnpackLimits(max_bytes=MIB + MIB // 2)
    unpack_layers(REFERENCE, new_root(tmp_path), [first], limits=limits)
    (tmp_path / "root2").mkdir()
    with pytest.raises(LayerTooLarge) as raised:
        unpack_layers(REFERENCE, tmp_path / "root2", [first, second], limits=limits)
    assert str(raised.value) == (
        f"image {REFERENCE}: layer {second.digest}: the image unpacks to more than "
        f"{MIB + MIB // 2} bytes"
    )


def test_entry_limit(tmp_path: Path) -> None:
    layer = raw_layer(tmp_path, oci.tar_bytes([file(f"f{index}") for index in range(5)]))
    with pytest.raises(LayerTooLarge, match="more than 4 entries"):
        unpack_layers(REFERENCE, new_root(tmp_path), [layer], limits=UnpackLimits(max_entries=4))


class StopAfter(threading.Event):
    """An event that reads as set from the `calls`-th look on: a cancel mid-stream."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def is_set(self) -> bool:
        self.calls -= 1
        return self.calls < 0 or super().is_set()


def test_stop_inside_one_large_entry(tmp_path: Path) -> None:
    size = 64 * MIB
    layer = raw_layer(tmp_path, oci.tar_bytes([file("big", bytes(size))]))
    root = new_root(tmp_path)
    started = time.monotonic()
    unpack_layers(REFERENCE, root, [layer], stop=StopAfter(4))
    assert time.monotonic() - started < 5
    big = root / "big"
    assert not big.exists() or big.stat().st_size < size


async def test_store_limits(
    registry: Registry, tmp_path: Path, store_leftovers: Callable[[], list[str]]
) -> None:
    store = ImageStore(
        tmp_path / "cache",
        scratch_dir=tmp_path / "scratch",
        unpack_limits=UnpackLimits(max_entries=3),
    )
    reference = registry.ref("busybox:1.0")
    with pytest.raises(LayerTooLarge, match="more than 3 entries"):
        await store.pull(reference)
    assert store_leftovers() == []
