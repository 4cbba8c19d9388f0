"""Template keys and template folders, without VMs (templates.py; the VM tests are in
tests/integration_tests/functional/test_templates.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
from isorun_hostd.config import Settings
from isorun_hostd.templates import TemplateKey, Templates
from isorun_hostd.vm.bootfiles import BootFiles
from isorun_hostd.vm.capabilities import HostCapabilities

KEY = TemplateKey(
    chain_id="sha256:" + "ab" * 32,
    disk="/img/ab.erofs",
    vcpus=1,
    mem_mib=256,
    kernel="/b/vmlinux-1.elf",
    initramfs="/b/initramfs-1.cpio",
    accel="tcg",
    qemu_version="7.2.22",
)


def templates(root: Path) -> Templates:
    caps = HostCapabilities("qemu-system-x86_64", "7.2.22", "tcg", "test", 2596098)
    boot = BootFiles(Path("/b/vmlinux-1.elf"), Path("/b/initramfs-1.cpio"), "6.1.0-test")
    return Templates(
        root, caps, boot, root / "run", pool_size=1, budget_bytes=1 << 30, boot_timeout_s=1
    )


def test_key_name_is_stable_and_changes_with_every_field() -> None:
    assert KEY.name == dataclasses.replace(KEY).name
    assert KEY.name.startswith("tpl-")
    changes = {
        "chain_id": "sha256:" + "cd" * 32,
        "disk": "/img/cd.erofs",
        "vcpus": 2,
        "mem_mib": 512,
        "kernel": "/b/vmlinux-2.elf",
        "initramfs": "/b/initramfs-2.cpio",  # a new agent: its initramfs has a new hash name
        "accel": "kvm",
        "qemu_version": "10.0.2",
    }
    names = {dataclasses.replace(KEY, **{field: value}).name for field, value in changes.items()}
    assert len(names) == len(changes) and KEY.name not in names


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_start_removes_only_the_folders_of_gone_hostds(tmp_path: Path) -> None:
    prefix = Settings(state_dir=tmp_path / "s", run_dir=tmp_path / "r").templates_prefix
    gone = tmp_path / f"{prefix}-{_dead_pid()}-aaaaaa"
    alive = tmp_path / f"{prefix}-{os.getpid()}-bbbbbb"
    foreign = tmp_path / f"0123456789abcdef-{_dead_pid()}-cccccc"
    for folder in (gone, alive, foreign):
        (folder / "tpl-x").mkdir(parents=True)
        (folder / "tpl-x" / "mem").write_bytes(b"ram")
    own = templates(tmp_path / f"{prefix}-{os.getpid()}-dddddd")
    own.start()
    assert not gone.exists()
    assert alive.exists() and foreign.exists()
    assert not own.root.exists()  # made by the first build only


@pytest.mark.asyncio
async def test_aclose_removes_the_folder(tmp_path: Path) -> None:
    own = templates(tmp_path / "p-1-x")
    own.start()
    (own.root / "tpl-x").mkdir(parents=True)
    await own.aclose()
    assert not own.root.exists()
    assert own.pool_vms() == []
