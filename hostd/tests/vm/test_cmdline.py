"""QEMU argv is a pure function of its inputs; golden files pin it (refresh: ISORUN_GOLDEN=1)."""

import os
from pathlib import Path

import pytest
from isorun_hostd.vm.bootfiles import BootFiles
from isorun_hostd.vm.capabilities import HostCapabilities
from isorun_hostd.vm.cmdline import RunPaths, VMSpec, build_argv

GOLDEN = Path(__file__).parent / "golden"
BOOT = BootFiles(Path("/b/vmlinux.elf"), Path("/b/initramfs.cpio"), "6.1.0-test-amd64")
PATHS = RunPaths(Path("/run/isorun/sb-1"))


def _caps(accel: str) -> HostCapabilities:
    return HostCapabilities("qemu-system-x86_64", "7.2.22", accel, "test", 2596098)  # type: ignore[arg-type]


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_argv_matches_golden(accel: str) -> None:
    spec = VMSpec("sb-1", vcpus=2, mem_mib=512, disk=Path("/img/disk.erofs"), hostname="sb-1")
    argv = "\n".join(build_argv(spec, _caps(accel), BOOT, PATHS)) + "\n"
    golden = GOLDEN / f"argv_{accel}.txt"
    if os.environ.get("ISORUN_GOLDEN"):
        golden.write_text(argv)
    assert argv == golden.read_text()


def test_kvm_and_tcg_differ_only_in_the_accelerator() -> None:
    spec = VMSpec("sb-1", disk=Path("/img/disk.erofs"))
    tcg = build_argv(spec, _caps("tcg"), BOOT, PATHS)
    kvm = build_argv(spec, _caps("kvm"), BOOT, PATHS)
    changed = {(a, b) for a, b in zip(tcg, kvm, strict=True) if a != b}
    assert {a for a, _ in changed} == {"tcg", "max", next(x for x in tcg if "tsc_early_khz" in x)}


def test_no_disk_means_no_root_device() -> None:
    argv = build_argv(VMSpec("probe-1"), _caps("kvm"), BOOT, PATHS)
    assert "virtio-blk-device,drive=root" not in argv
    assert "isorun.root" not in argv[argv.index("-append") + 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vcpus": 0}, "vcpus"),
        ({"mem_mib": 64}, "mem_mib"),
        ({"hostname": "Bad_Name"}, "hostname"),
    ],
)
def test_spec_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VMSpec("sb-1", **kwargs)  # type: ignore[arg-type]


def test_comma_in_a_path_cannot_inject_qemu_options() -> None:
    spec = VMSpec("sb-1", disk=Path("/img/x,readonly=off"))
    with pytest.raises(ValueError, match="comma"):
        build_argv(spec, _caps("tcg"), BOOT, PATHS)
