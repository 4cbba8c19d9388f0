"""Choosing the accelerator: boot the real guest under KVM and see whether the agent answers."""

from __future__ import annotations

import logging
import secrets
from dataclasses import replace
from pathlib import Path

from isorun_hostd.vm.bootfiles import BootFiles
from isorun_hostd.vm.capabilities import (
    PROBE_TIMEOUT_S,
    Accel,
    HostCapabilities,
    ProbeCache,
    kvm_usable_device,
    qemu_version,
    tsc_khz,
)
from isorun_hostd.vm.cmdline import VMSpec
from isorun_hostd.vm.errors import LaunchError, VMError
from isorun_hostd.vm.machine import MicroVM

log = logging.getLogger(__name__)


async def host_capabilities(
    qemu_binary: str,
    boot: BootFiles,
    run_root: Path,
    cache_path: Path,
    forced: Accel | None = None,
) -> HostCapabilities:
    """Probe (or recall) what this host offers; ``forced`` skips the probe.

    Raises:
        FileNotFoundError: QEMU is not installed.
    """
    version = qemu_version(qemu_binary)
    base = HostCapabilities(qemu_binary, version, "tcg", "", tsc_khz())
    if forced is not None:
        return replace(base, accel=forced, accel_reason="set by configuration")
    cache = ProbeCache(cache_path)
    key = ProbeCache.key(version, (boot.kernel, boot.initramfs))
    cached = cache.get(key)
    if cached is not None:
        return cached
    accel, reason = await _probe(replace(base, accel="kvm"), boot, run_root)
    caps = replace(base, accel=accel, accel_reason=reason)
    if accel == "tcg":
        log.warning("KVM unavailable, falling back to TCG (software emulation, slow): %s", reason)
    cache.put(key, caps)
    return caps


async def _probe(kvm: HostCapabilities, boot: BootFiles, run_root: Path) -> tuple[Accel, str]:
    unusable = kvm_usable_device()
    if unusable:
        return "tcg", unusable
    vm = MicroVM(VMSpec(f"probe-{secrets.token_hex(4)}"), kvm, boot, run_root)
    try:
        await vm.start(timeout_s=PROBE_TIMEOUT_S)
    except LaunchError as exc:
        said = exc.qemu_log.splitlines()[0] if exc.qemu_log else str(exc).splitlines()[0]
        return "tcg", f"a stock guest kernel did not boot on /dev/kvm (QEMU: {said})"
    except VMError as exc:
        return "tcg", f"a stock guest kernel did not boot on /dev/kvm ({str(exc).splitlines()[0]})"
    finally:
        await vm.destroy()
    return "kvm", f"a stock guest booted on /dev/kvm in {vm.boot_ms:.0f} ms"
