"""What this host offers VMs, probed once: the QEMU binary, the accelerator and the TSC rate.

KVM is chosen only if a standard guest actually boots on it. On nested paravirtual hosts
``/dev/kvm`` exists and opens, yet a stock guest kernel hangs on it, so the probe boots the real
guest (kernel + initramfs, no disk) under KVM and waits for the agent's handshake. Anything else
falls back to TCG, loudly. The verdict is cached per (host kernel, QEMU, guest boot files).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Accel = Literal["kvm", "tcg"]

PROBE_TIMEOUT_S = 8.0
_FALLBACK_TSC_KHZ = 2_000_000


@dataclass(frozen=True, slots=True)
class HostCapabilities:
    qemu_binary: str
    qemu_version: str
    accel: Accel
    accel_reason: str
    tsc_khz: int


def qemu_version(binary: str) -> str:
    """QEMU's version string, e.g. ``7.2.22``.

    Raises:
        FileNotFoundError: QEMU is not installed.
    """
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"version (\S+)", out)
    return match.group(1) if match else out.strip()


def tsc_khz() -> int:
    """The host TSC rate; under TCG the guest's TSC is the host's."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return _FALLBACK_TSC_KHZ
    match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)
    return round(float(match.group(1)) * 1000) if match else _FALLBACK_TSC_KHZ


def kvm_usable_device() -> str | None:
    """None if /dev/kvm can be opened, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm is not usable ({exc.strerror})"
    os.close(fd)
    return None


class ProbeCache:
    """The accelerator verdict on disk, keyed by everything that could change it."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @staticmethod
    def key(qemu: str, boot_files: tuple[Path, Path]) -> str:
        kernel, initramfs = boot_files
        return f"{platform.release()}|{qemu}|{kernel.name}|{initramfs.name}"

    def get(self, key: str) -> HostCapabilities | None:
        try:
            data = json.loads(self._path.read_text())
            if data.get("key") == key:
                return HostCapabilities(**data["caps"])
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return None

    def put(self, key: str, caps: HostCapabilities) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "caps": asdict(caps)}))
        tmp.replace(self._path)
