"""QEMU argv is a pure function of its inputs; golden files pin it (refresh: ISORUN_GOLDEN=1)."""

import os
from pathlib import Path

import pytest
from isorun_hostd.vm.bootfiles import BootFiles
from isorun_hostd.vm.capabilities import HostCapabilities
from isorun_hostd.vm.cmdline import RunPaths, VMSpec, build_argv, kernel_cmdline

GOLDEN = Path(__file__).parent / "golden"
BOOT = BootFiles(Path("/b/vmlinux.elf"), Path("/b/initramfs.cpio"), "6.1.0-test-amd64")
PATHS = RunPaths(Path("/run/isorun/sb-1"))


def _caps(accel: str) -> HostCapabilities:
    return HostCapabilities("qemu-system-x86_64", "7.2.22", accel, "test", 2596098)  # type: ignore[arg-type]


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_argv_matches_golden(accel: str) -> None:
    spec = VMSpec("sb-1", vcpus=2, mem_mib=512, disk=Path("/img/disk.erofs"), nic=True)
    argv = "\n".join(build_argv(spec, _caps(accel), BOOT, PATHS)) + "\n"
    golden = GOLDEN / f"argv_{accel}.txt"
    if os.environ.get("ISORUN_GOLDEN"):
        golden.write_text(argv)
    assert argv == golden.read_text()


def test_kvm_and_tcg_differ_only_in_the_accelerator() -> None:
    spec = VMSpec("sb-1", disk=Path("/img/disk.erofs"), nic=True)
    tcg = build_argv(spec, _caps("tcg"), BOOT, PATHS)
    kvm = build_argv(spec, _caps("kvm"), BOOT, PATHS)
    changed = {(a, b) for a, b in zip(tcg, kvm, strict=True) if a != b}
    assert {a for a, _ in changed} == {"tcg", "max", next(x for x in tcg if "tsc_early_khz" in x)}


def test_only_tcg_guests_run_without_aslr() -> None:
    spec = VMSpec("sb-1", disk=Path("/img/disk.erofs"), nic=True)
    assert "norandmaps" in kernel_cmdline(spec, _caps("tcg")).split()
    assert "norandmaps" not in kernel_cmdline(spec, _caps("kvm")).split()


def test_template_and_clone_differ_only_in_share_paths_and_name() -> None:
    """A clone's argv is its template's with share=off: what x-ignore-shared needs."""
    disk = Path("/img/disk.erofs")
    template = build_argv(
        VMSpec("tpl-1", disk=disk, mem_path=Path("/shm/k.partial/mem"), mem_shared=True),
        _caps("tcg"),
        BOOT,
        RunPaths(Path("/run/isorun/tpl-1")),
    )
    clone = build_argv(
        VMSpec("pool-2", disk=disk, mem_path=Path("/shm/k/mem")),
        _caps("tcg"),
        BOOT,
        RunPaths(Path("/run/isorun/pool-2")),
    )
    changed = [(a, b) for a, b in zip(template, clone, strict=True) if a != b]
    assert changed == [
        ("tpl-1", "pool-2"),
        (
            "memory-backend-file,id=mem,size=256M,mem-path=/shm/k.partial/mem,share=on",
            "memory-backend-file,id=mem,size=256M,mem-path=/shm/k/mem,share=off",
        ),
        (
            "unix:/run/isorun/tpl-1/qmp.sock,server=on,wait=off",
            "unix:/run/isorun/pool-2/qmp.sock,server=on,wait=off",
        ),
        (
            "socket,id=agent,path=/run/isorun/tpl-1/agent.sock,server=on,wait=off",
            "socket,id=agent,path=/run/isorun/pool-2/agent.sock,server=on,wait=off",
        ),
    ]


def test_every_vm_has_the_ram_block_mem_and_boots_as_isorun() -> None:
    """Stream restores need the same RAM block name whatever backend the saved VM had."""
    argv = build_argv(VMSpec("sb-9"), _caps("tcg"), BOOT, PATHS)
    assert argv[argv.index("-M") + 1] == "microvm,memory-backend=mem"
    assert argv[argv.index("-object") + 1] == "memory-backend-ram,id=mem,size=256M"
    assert "sb-9" not in argv[argv.index("-append") + 1]
    assert "isorun.hostname=isorun" in argv[argv.index("-append") + 1]


def test_no_disk_means_no_root_device() -> None:
    argv = build_argv(VMSpec("probe-1"), _caps("kvm"), BOOT, PATHS)
    assert "virtio-blk-device,drive=root" not in argv
    assert "isorun.root" not in argv[argv.index("-append") + 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vcpus": 0}, "vcpus"),
        ({"mem_mib": 64}, "mem_mib"),
        ({"mem_shared": True}, "mem_path"),
    ],
)
def test_spec_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VMSpec("sb-1", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        VMSpec("sb-1", disk=Path("/img/x,readonly=off")),
        VMSpec("sb-1", mem_path=Path("/shm/x,share=on")),
    ],
)
def test_comma_in_a_path_cannot_inject_qemu_options(spec: VMSpec) -> None:
    with pytest.raises(ValueError, match="comma"):
        build_argv(spec, _caps("tcg"), BOOT, PATHS)


def test_the_nic_is_the_same_in_every_sandbox() -> None:
    """Names, MAC and guest address are constants: a template's argv serves every slot."""
    one = build_argv(VMSpec("sb-1", nic=True), _caps("tcg"), BOOT, PATHS)
    other = build_argv(VMSpec("sb-1", nic=True), _caps("tcg"), BOOT, PATHS)
    bare = build_argv(VMSpec("sb-1"), _caps("tcg"), BOOT, PATHS)
    assert one == other
    assert "tap,id=net0,ifname=tap0,script=no,downscript=no" in one
    assert "virtio-net-device,netdev=net0,mac=02:00:00:00:00:02" in one
    assert "isorun.ip=10.0.0.2/24:10.0.0.1" in one[one.index("-append") + 1]
    assert not any("net0" in a or "isorun.ip" in a for a in bare)
