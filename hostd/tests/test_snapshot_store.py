"""SnapshotStore: ids are checked before any path is built, a snapshot exists once its meta is
committed, and a sweep removes only saves that never finished."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from isorun_hostd.images.store import ImageConfig, ImageDisk
from isorun_hostd.snapshots import SnapshotMeta, SnapshotNotFound, SnapshotStore


def meta(snapshot_id: str, tmp_path: Path) -> SnapshotMeta:
    image = ImageDisk(
        reference="busybox:1.0",
        pinned="127.0.0.1:5000/isorun/busybox@sha256:" + "0" * 64,
        manifest_digest="sha256:" + "0" * 64,
        chain_id="sha256:" + "1" * 64,
        disk_path=tmp_path / "disk.erofs",
        size_bytes=1,
        config=ImageConfig(env=[], entrypoint=None, cmd=None, working_dir="/", user="root"),
    )
    return SnapshotMeta(
        snapshot_id=snapshot_id,
        kind="snapshot",
        source_sandbox_id="sb-1",
        created_unix=time.time(),
        vcpus=1,
        mem_mib=256,
        boot_hostname="isorun",
        hostname="sb-1",
        image=image,
        kernel=tmp_path / "vmlinux",
        initramfs=tmp_path / "initramfs",
        accel="tcg",
        size_bytes=10,
    )


@pytest.mark.parametrize("bad", ["", "../etc", "snap/../../x", "Snap-1", "-snap", "a" * 64, "."])
def test_ids_that_are_not_plain_names_are_refused(tmp_path: Path, bad: str) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    with pytest.raises(SnapshotNotFound, match="not a valid snapshot id"):
        store.get(bad)
    with pytest.raises(SnapshotNotFound, match="not a valid snapshot id"):
        store.prepare(bad)
    with pytest.raises(SnapshotNotFound, match="not a valid snapshot id"):
        store.delete(bad)
    assert not (tmp_path / "snapshots").exists()


def test_a_snapshot_exists_once_committed_and_goes_with_delete(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    state = store.prepare("snap-1")
    state.write_bytes(b"state")
    with pytest.raises(SnapshotNotFound, match="no snapshot snap-1"):
        store.get("snap-1")
    assert store.all() == []
    store.commit(meta("snap-1", tmp_path))
    assert store.get("snap-1").hostname == "sb-1"
    assert [m.snapshot_id for m in store.all()] == ["snap-1"]
    with pytest.raises(FileExistsError):
        store.prepare("snap-1")
    store.delete("snap-1")
    store.delete("snap-1")
    assert store.all() == []


def test_an_unreadable_meta_is_not_found(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    store.prepare("snap-1")
    (store.folder("snap-1") / "meta.json").write_text("{not json")
    with pytest.raises(SnapshotNotFound, match="unreadable"):
        store.get("snap-1")
    assert store.all() == []


def test_sweep_removes_only_old_unfinished_saves(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    store.prepare("done")
    store.commit(meta("done", tmp_path))
    store.prepare("stale")
    store.prepare("in-progress")
    old = time.time() - 3600
    for name in ("done", "stale"):
        os.utime(store.folder(name), (old, old))
    assert store.sweep(older_than_s=60) == ["stale"]
    assert sorted(p.name for p in store.root.iterdir()) == ["done", "in-progress"]


def test_discard_frees_the_id_at_once_and_sweep_removes_what_was_left(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    store.prepare("snap-1")
    store.commit(meta("snap-1", tmp_path))
    gone = store.discard("snap-1")
    assert gone is not None and gone.is_dir()
    with pytest.raises(SnapshotNotFound):
        store.get("snap-1")
    assert store.all() == []
    store.prepare("snap-1")  # the id is free while the old folder awaits removal
    assert store.discard("absent") is None
    # A process that died before removing it: the next start's sweep does, whatever its age.
    assert store.sweep(older_than_s=60) == [gone.name]
    assert [p.name for p in store.root.iterdir()] == ["snap-1"]
