"""Layers that expand past their limits: sizes, entry counts, sparse members, cancellation."""

from __future__ import annotations

import io
import tarfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from isorun_hostd.images import (
    CorruptLayer,
    ImageStore,
    LayerTooLarge,
    SpecialFile,
    UnpackLimits,
)
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


def pax_record(key: str, value: bytes) -> bytes:
    """One `LEN key=value\\n` record; LEN counts itself."""
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def raw_member(kind: bytes, data: bytes, name: str = "././@header") -> bytes:
    """A header block of type `kind` declaring len(data), then the data padded to 512."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data)
    padding = b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    return info.tobuf(tarfile.USTAR_FORMAT) + data + padding


def plain_file(name: str, data: bytes = b"") -> bytes:
    return raw_member(tarfile.REGTYPE, data, name)


END = b"\0" * (2 * tarfile.BLOCKSIZE)


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


def unpack_measured(
    tmp_path: Path, tar: bytes, *, trace: bool = True
) -> tuple[Exception, float, int]:
    """Unpack `tar`, expecting an error: (error, seconds, peak traced bytes or 0)."""
    layer = raw_layer(tmp_path, tar)
    root = new_root(tmp_path)
    if trace:
        tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(CorruptLayer) as raised:
            unpack_layers(REFERENCE, root, [layer])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()  # a no-op when not tracing
    return raised.value, time.monotonic() - started, peak


def test_oversized_pax_header(tmp_path: Path) -> None:
    """tarfile would read all 64 MiB of this header into memory before parsing it."""
    header = raw_member(tarfile.XHDTYPE, pax_record("comment", b"a" * (64 * MIB)))
    error, seconds, peak = unpack_measured(tmp_path, header + plain_file("f") + END)
    assert f"PAX extended header of {64 * MIB + 18} bytes (more than {MIB})" in str(error)
    assert seconds < 2
    assert peak < 4 * MIB


def test_oversized_gnu_long_name(tmp_path: Path) -> None:
    header = raw_member(tarfile.GNUTYPE_LONGNAME, b"n" * (2 * MIB) + b"\0", "././@LongLink")
    error, _, peak = unpack_measured(tmp_path, header + plain_file("f") + END)
    assert "GNU long name of" in str(error)
    assert peak < 4 * MIB


def test_long_chain_of_extended_headers(tmp_path: Path) -> None:
    """Each extended header makes tarfile recurse: 3000 would end in RecursionError."""
    header = raw_member(tarfile.XHDTYPE, pax_record("comment", b"x"))
    error, _, _ = unpack_measured(tmp_path, header * 3000 + plain_file("f") + END)
    assert "more than 7 extended headers in front of one entry" in str(error)


def test_global_headers_capped_in_all(tmp_path: Path) -> None:
    header = raw_member(tarfile.XGLTYPE, pax_record("comment", b"g" * (MIB // 2)))
    members = b"".join(header + plain_file(f"f{index}") for index in range(3))
    error, _, _ = unpack_measured(tmp_path, members + END)
    assert f"PAX global headers of more than {MIB} bytes" in str(error)


def test_sparse_map_read_is_bounded(tmp_path: Path) -> None:
    """A GNU sparse 1.0 map is read from the data for as long as its count claims."""
    sparse = b"".join(
        pax_record(key, value)
        for key, value in [
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"f"),
            ("GNU.sparse.realsize", b"10"),
        ]
    )
    mapping = b"9999999\n" + b"1234567890123456789\n" * 3_000_000  # 60 MB of map
    tar = raw_member(tarfile.XHDTYPE, sparse) + plain_file("GNUSparseFile.0/f", mapping) + END
    error, seconds, _ = unpack_measured(tmp_path, tar, trace=False)
    assert "the headers of one entry take more than" in str(error)
    assert seconds < 3
