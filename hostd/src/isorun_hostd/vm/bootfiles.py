"""The guest's kernel and initramfs, assembled from the host's Debian kernel and cached by content.

```
/boot/vmlinuz-R (bzImage, xz) ──extract──► boot/vmlinux-<sha>.elf     booted directly (PVH)
agent binary + modules of R   ──cpio────► boot/initramfs-<sha>.cpio  uncompressed newc
    /init                      the agent (PID 1)
    /etc/isorun/modules        module paths in load order (dependencies first)
    /lib/modules/*.ko          signature-stripped copies
    /dev/console               so PID 1 has stdio before it mounts devtmpfs
```

Booting the ELF instead of the bzImage skips the in-guest xz decompression (2.3 s under TCG);
stripping the appended module signatures skips an RSA verify per module (vm-lab.md section 1).
Both files are named by the hash of their inputs, so a new agent or kernel gets new files and
running VMs keep theirs.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from isorun_hostd.vm.errors import BootFilesError

# virtio_mmio: microvm's transport; virtio_console: the agent port; virtio_blk + erofs + overlay:
# the image disk under a writable layer; crc32c_generic: libcrc32c (erofs) needs a crc32c and the
# accelerated one does not load under TCG; virtio_net: the sandbox's NIC.
GUEST_MODULES = (
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "crc32c_generic",
    "erofs",
    "overlay",
    "virtio_net",
)
_XZ_MAGIC = b"\xfd7zXZ\x00"
_ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True, slots=True)
class BootFiles:
    kernel: Path
    initramfs: Path
    kernel_release: str


def prepare(
    boot_dir: Path, agent: Path, kernel: Path | None = None, modules_dir: Path | None = None
) -> BootFiles:
    """Return the cached kernel ELF and initramfs, building whichever is missing.

    Raises:
        BootFilesError: no guest kernel, no agent binary, or a module is missing.
    """
    kernel = kernel or _newest_kernel()
    release = kernel.name.removeprefix("vmlinuz-")
    modules_dir = modules_dir or Path("/lib/modules") / release
    if not agent.is_file():
        raise BootFilesError(f"guest agent binary {agent} not found: build it with `make agent`")
    boot_dir.mkdir(parents=True, exist_ok=True)
    return BootFiles(
        kernel=_kernel_elf(boot_dir, kernel),
        initramfs=_initramfs(boot_dir, agent, modules_dir),
        kernel_release=release,
    )


def _newest_kernel() -> Path:
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        raise BootFilesError(
            "no guest kernel in /boot: install Debian's linux-image-amd64 (make setup)"
        )
    return kernels[-1]


def _kernel_elf(boot_dir: Path, kernel: Path) -> Path:
    image = kernel.read_bytes()
    if image.startswith(_ELF_MAGIC):
        return kernel
    out = boot_dir / f"vmlinux-{hashlib.sha256(image).hexdigest()[:16]}.elf"
    if out.exists():
        return out
    start = image.find(_XZ_MAGIC)
    if start < 0:
        raise BootFilesError(f"{kernel} is not an xz-compressed bzImage; pass an ELF vmlinux")
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(image[start:])
    if not elf.startswith(_ELF_MAGIC):
        raise BootFilesError(f"{kernel}: the decompressed payload is not an ELF kernel")
    _atomic_write(out, elf)
    return out


def module_load_order(modules_dir: Path, wanted: tuple[str, ...] = GUEST_MODULES) -> list[Path]:
    """The .ko files for ``wanted`` and their dependencies, dependencies first.

    Raises:
        BootFilesError: a wanted module is neither a module nor built in.
    """
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[_module_name(path)] = path
    builtin_file = modules_dir / "modules.builtin"
    builtin = (
        {_module_name(p) for p in builtin_file.read_text().split()}
        if builtin_file.exists()
        else set()
    )
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key])
        elif key not in builtin:
            raise BootFilesError(f"kernel module {name} not found in {modules_dir}")
    return [modules_dir / p for p in order]


def _module_name(path: str) -> str:
    return Path(path).name.removesuffix(".ko").replace("-", "_")


def _initramfs(boot_dir: Path, agent: Path, modules_dir: Path) -> Path:
    modules = module_load_order(modules_dir)
    digest = hashlib.sha256(agent.read_bytes())
    for module in modules:
        digest.update(module.name.encode())
        digest.update(module.read_bytes())
    out = boot_dir / f"initramfs-{digest.hexdigest()[:16]}.cpio"
    if out.exists():
        return out
    archive = _Cpio()
    for folder in ("dev", "etc", "etc/isorun", "lib", "lib/modules", "proc", "sys", "mnt"):
        archive.add(folder, stat.S_IFDIR | 0o755)
    archive.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    archive.add("init", stat.S_IFREG | 0o755, agent.read_bytes())
    listed = []
    for module in modules:
        archive.add(f"lib/modules/{module.name}", stat.S_IFREG | 0o644, _stripped(module))
        listed.append(f"/lib/modules/{module.name}")
    archive.add("etc/isorun/modules", stat.S_IFREG | 0o644, ("\n".join(listed) + "\n").encode())
    _atomic_write(out, archive.finish())
    return out


def _stripped(module: Path) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / module.name
        copy.write_bytes(module.read_bytes())
        result = subprocess.run(
            ["strip", "--strip-debug", str(copy)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise BootFilesError(f"strip {module}: {result.stderr.strip()} (install binutils)")
        return copy.read_bytes()


class _Cpio:
    """A minimal writer of the "newc" cpio format that the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._parts += [header, encoded, _pad(len(header) + len(encoded)), data, _pad(len(data))]

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return b"".join(self._parts)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % 4)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
