"""Unpack trees are removed even when hostd is not root and the image made directories 0555."""

from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from isorun_hostd.images import ImageStore
from isorun_hostd.images.unpack import Layer, unpack_layers

from tests.fixtures import oci
from tests.fixtures.oci import Entry, directory, file

NOBODY = 65534


def as_unprivileged(work: Callable[[], None]) -> int:
    """Run `work` as a non-root user (a forked child when we are root); its exit status."""
    if os.geteuid() != 0:
        work()
        return 0
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        status = 1
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            work()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_read_only_unpack_tree_is_removed() -> None:
    base = Path(tempfile.mkdtemp(prefix="isorun-cleanup-test-"))
    try:
        if os.geteuid() == 0:
            os.chown(base, NOBODY, NOBODY)
        blob = oci.layer(
            [
                Entry("./", "dir", mode=0o555),
                directory("usr", 0o555),
                directory("usr/lib", 0o500),
                file("usr/lib/libx.so", "x", 0o444),
                directory("empty", 0o000),
                directory("locked", 0o000),
                file("locked/secret", "s", 0o400),
            ]
        )
        layer_path = base / "layer"
        layer_path.write_bytes(blob.data)
        os.chmod(layer_path, 0o644)
        layer = Layer(oci.sha256(blob.data), layer_path, blob.diff_id, len(blob.data))
        cache = base / "cache"
        leftover = cache / "tmp" / "isorun-unpack-crashed"

        def work() -> None:
            rootfs = leftover / "rootfs"
            rootfs.mkdir(parents=True)
            unpack_layers("test/image:1", rootfs, [layer])
            assert (rootfs / "usr/lib/libx.so").exists()
            ImageStore(cache)  # removes leftovers of a crashed pull
            assert not leftover.exists(), sorted(str(p) for p in leftover.rglob("*"))

        assert as_unprivileged(work) == 0
    finally:
        for directory_path, _, _ in os.walk(base):
            os.chmod(directory_path, 0o700)
        shutil.rmtree(base, ignore_errors=True)
