"""unpack_layers on crafted layers: metadata, links, replacement rules, refusals (no registry)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from isorun_hostd.images import CorruptLayer, SpecialFile, UnsafePath
from isorun_hostd.images.unpack import Layer, unpack_layers

from tests.fixtures import oci
from tests.fixtures.oci import Entry, directory, file, symlink


def write_layers(tmp_path: Path, *layers: list[Entry]) -> list[Layer]:
    result = []
    for index, entries in enumerate(layers):
        blob = oci.layer(entries)
        path = tmp_path / f"layer{index}"
        path.write_bytes(blob.data)
        result.append(Layer(oci.sha256(blob.data), path, blob.diff_id, len(blob.data)))
    return result


def unpack(tmp_path: Path, *layers: list[Entry]) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    unpack_layers("test/image:1", root, write_layers(tmp_path, *layers))
    return root


def test_metadata_kept(tmp_path: Path) -> None:
    root = unpack(
        tmp_path,
        [
            directory("usr", 0o755),
            directory("usr/bin", 0o555),
            Entry("usr/bin/su", data=b"su", mode=0o4755, uid=0, gid=0, mtime=1_600_000_000),
            Entry("home", "dir", mode=0o750, uid=1000, gid=1000, mtime=1_500_000_000),
            Entry("home/f", data=b"x", mode=0o600, uid=1000, gid=1000),
        ],
    )
    su = (root / "usr/bin/su").stat()
    assert stat.S_IMODE(su.st_mode) == 0o4755
    assert su.st_mtime == 1_600_000_000
    assert stat.S_IMODE((root / "usr/bin").stat().st_mode) == 0o555
    home = (root / "home").stat()
    assert (stat.S_IMODE(home.st_mode), home.st_uid, home.st_gid) == (0o750, 1000, 1000)
    assert home.st_mtime == 1_500_000_000


def test_links_and_relative_symlinked_parent(tmp_path: Path) -> None:
    root = unpack(
        tmp_path,
        [directory("usr"), directory("usr/lib"), symlink("lib", "usr/lib")],
        [
            file("lib/libx.so", "x"),
            Entry("usr/lib/liby.so", "hardlink", linkname="usr/lib/libx.so"),
        ],
    )
    assert (root / "usr/lib/libx.so").read_text() == "x"
    assert os.path.samefile(root / "usr/lib/libx.so", root / "usr/lib/liby.so")
    assert (root / "lib").is_symlink()


def test_replacement_rules(tmp_path: Path) -> None:
    root = unpack(
        tmp_path,
        [directory("a"), file("a/old", "1"), file("b", "file"), symlink("c", "/etc/passwd")],
        [file("a", "now a file"), directory("b"), file("b/x", "2"), file("c", "not a link")],
    )
    assert (root / "a").read_text() == "now a file"
    assert (root / "b/x").read_text() == "2"
    assert not (root / "c").is_symlink()
    assert (root / "c").read_text() == "not a link"


@pytest.mark.parametrize(
    ("entries", "error", "detail"),
    [
        ([Entry("p", "fifo")], SpecialFile, "'p' is a fifo"),
        ([Entry("sda", "block", devmajor=8)], SpecialFile, "'sda' is a block device"),
        ([Entry("h", "hardlink", linkname="missing")], UnsafePath, "does not exist"),
        ([Entry("h", "hardlink", linkname="/etc/passwd")], UnsafePath, "absolute hardlink"),
        ([directory("d"), Entry("h", "hardlink", linkname="d")], UnsafePath, "is a directory"),
        ([file("f"), file("f/x")], UnsafePath, "parent f is not a directory"),
        ([symlink("a", "b"), symlink("b", "a"), file("a/x")], UnsafePath, "levels of symlinks"),
    ],
)
def test_refused(tmp_path: Path, entries: list[Entry], error: type[Exception], detail: str) -> None:
    with pytest.raises(error, match=detail):
        unpack(tmp_path, entries)


def test_truncated_layer(tmp_path: Path) -> None:
    (layer,) = write_layers(tmp_path, [file("big", os.urandom(100_000))])
    layer.path.write_bytes(layer.path.read_bytes()[:5000])
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(CorruptLayer, match="image test/image:1: layer sha256:"):
        unpack_layers("test/image:1", root, [layer])


def test_directory_metadata_not_applied_through_a_replaced_parent(tmp_path: Path) -> None:
    """`a/victim/` then `a -> /host/path`: finish() must not chmod/utime /host/path/victim."""
    host = tmp_path / "host"
    (host / "victim").mkdir(parents=True)
    os.chmod(host / "victim", 0o700)
    os.utime(host / "victim", (12345, 12345))
    before = (host / "victim").stat()
    root = unpack(
        tmp_path,
        [
            directory("a"),
            Entry("a/victim", "dir", mode=0o777, mtime=1_000_000_000),
            symlink("a", str(host)),
        ],
    )
    after = (host / "victim").stat()
    assert stat.S_IMODE(after.st_mode) == 0o700
    assert after.st_mtime_ns == before.st_mtime_ns
    assert os.readlink(root / "a") == str(host)


def test_removed_directory_metadata_is_forgotten(tmp_path: Path) -> None:
    """`a/victim` (0700) must not land on `b/victim` once `a` becomes a symlink to `b`."""
    root = unpack(
        tmp_path,
        [
            directory("b"),
            Entry("b/victim", "dir", mode=0o751, mtime=1_500_000_000),
            directory("a"),
            Entry("a/victim", "dir", mode=0o700, mtime=1_000_000_000),
            symlink("a", "b"),
        ],
    )
    victim = (root / "b/victim").stat()
    assert (stat.S_IMODE(victim.st_mode), victim.st_mtime) == (0o751, 1_500_000_000)


@pytest.mark.parametrize(
    ("pax", "detail"),
    [
        ({"mtime": "nan"}, "has mtime nan out of range"),
        ({"mtime": "1e300"}, "has mtime 1e+300 out of range"),
        ({"path": "a\0b"}, "has a NUL byte in its name or link target"),
        ({"uid": str(2**70)}, f"has uid/gid {2**70}/0 out of range"),
        ({"gid": "-5"}, "has uid/gid 0/-5 out of range"),
        ({"SCHILY.xattr.user.a\0b": "v"}, "embedded null byte"),
    ],
)
def test_malformed_metadata_is_corrupt(tmp_path: Path, pax: dict[str, str], detail: str) -> None:
    info = tarfile.TarInfo("f")
    info.pax_headers = pax
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    data = buffer.getvalue()
    path = tmp_path / "layer"
    path.write_bytes(data)
    root = tmp_path / "root"
    root.mkdir()
    layer = Layer(oci.sha256(data), path, oci.sha256(data), len(data))
    with pytest.raises(CorruptLayer) as raised:
        unpack_layers("test/image:1", root, [layer])
    assert str(raised.value).startswith(f"image test/image:1: layer {layer.digest} is corrupt:")
    assert detail in str(raised.value)
