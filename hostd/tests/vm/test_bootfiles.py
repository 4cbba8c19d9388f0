import subprocess
from pathlib import Path

import pytest
from isorun_hostd.vm import bootfiles
from isorun_hostd.vm.errors import BootFilesError

KERNELS = sorted(Path("/boot").glob("vmlinuz-*"))
needs_kernel = pytest.mark.skipif(not KERNELS, reason="no Debian guest kernel installed")


def _fake_modules(root: Path) -> Path:
    for rel in ("a/virtio.ko", "a/virtio_ring.ko", "b/virtio_mmio.ko", "b/erofs.ko", "b/crc.ko"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\x7fELF" + rel.encode())
    (root / "modules.dep").write_text(
        "a/virtio.ko: a/virtio_ring.ko\na/virtio_ring.ko:\n"
        "b/virtio_mmio.ko: a/virtio.ko a/virtio_ring.ko\nb/erofs.ko: b/crc.ko\nb/crc.ko:\n"
    )
    (root / "modules.builtin").write_text("kernel/fs/overlayfs/overlay.ko\n")
    return root


def test_load_order_puts_dependencies_first(tmp_path: Path) -> None:
    order = bootfiles.module_load_order(
        _fake_modules(tmp_path), ("virtio_mmio", "erofs", "overlay")
    )
    assert [p.name for p in order] == [
        "virtio_ring.ko",
        "virtio.ko",
        "virtio_mmio.ko",
        "crc.ko",
        "erofs.ko",
    ]


def test_missing_module_is_named(tmp_path: Path) -> None:
    with pytest.raises(BootFilesError, match="virtio_vsock not found"):
        bootfiles.module_load_order(_fake_modules(tmp_path), ("virtio_vsock",))


def test_missing_agent_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(BootFilesError, match="make agent"):
        bootfiles.prepare(tmp_path, tmp_path / "nope", KERNELS[-1] if KERNELS else tmp_path)


@needs_kernel
def test_initramfs_is_a_valid_cpio_with_agent_and_modules(tmp_path: Path) -> None:
    agent = tmp_path / "agent"
    agent.write_bytes(b"\x7fELF fake agent")
    boot = bootfiles.prepare(tmp_path / "boot", agent, KERNELS[-1])
    assert boot.kernel.read_bytes()[:4] == b"\x7fELF"
    listing = subprocess.run(
        ["cpio", "-itv"], input=boot.initramfs.read_bytes(), capture_output=True, check=True
    ).stdout.decode()
    assert " init\n" in listing and "dev/console" in listing
    modules = [line for line in listing.splitlines() if line.endswith(".ko")]
    assert any("virtio_console.ko" in m for m in modules) and any("erofs.ko" in m for m in modules)
    again = bootfiles.prepare(tmp_path / "boot", agent, KERNELS[-1])
    assert again == boot
    agent.write_bytes(b"\x7fELF another agent")
    assert bootfiles.prepare(tmp_path / "boot", agent, KERNELS[-1]).initramfs != boot.initramfs
