"""QEMU argv for a sandbox VM: a pure function of (spec, host capabilities, boot files, paths).

The recipe is vm-lab.md's fastest working one: ``-M microvm`` (ACPI on: Debian's kernel finds
virtio-mmio devices only through ACPI), the uncompressed kernel ELF booted through PVH, an
uncompressed initramfs whose PID 1 is the agent, one virtio-serial port for the agent, one
virtio-blk disk holding the image read-only and, for sandboxes, one virtio-net NIC on the tap
of the namespace QEMU is started in (``net.plan``: the same names, MACs and addresses in
every namespace, so the argv does not depend on it). KVM and TCG differ only in the
accelerator flags and in two kernel arguments that TCG needs: ``tsc_early_khz`` (without it ~1
boot in 10 hangs calibrating the TSC) and ``norandmaps``. TCG finds translated code by guest
virtual address, so with user-space ASLR every new process runs its loader and libraries at new
addresses and QEMU translates them again: an exec of ``/bin/true`` costs ~29 ms in the guest
with ASLR and ~7 ms without (python3 -c pass: ~210 and ~140 ms). KVM guests keep ASLR.

Guest RAM is always a memory backend named ``mem`` (the RAM block's name in a state stream), so a
stream saved from any VM loads into any other of the same shape:
```
mem_path None          memory-backend-ram                           cold boot, stream restore
mem_path, mem_shared   memory-backend-file,share=on  (MAP_SHARED)   a template being booted
mem_path, not shared   memory-backend-file,share=off (MAP_PRIVATE)  a clone of that template
```
Nothing in the argv names the sandbox: the boot hostname is the constant ``BOOT_HOSTNAME`` and
the agent's identity op sets the real one, so a template's argv serves every sandbox of its
shape (only the run paths, ``-name`` and the memory backend's share flag differ).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from isorun_hostd.agent_channel.protocol import PORT_NAME
from isorun_hostd.net.plan import GUEST_IP_ARG, GUEST_MAC, TAP
from isorun_hostd.vm.bootfiles import BootFiles
from isorun_hostd.vm.capabilities import HostCapabilities

KERNEL_ARGS = (
    "console=ttyS0",
    "quiet",
    "loglevel=1",
    "no_timer_check",
    "tsc=reliable",
    "i8042.noaux",
    "i8042.nokbd",
    "i8042.nopnp",
    "nokaslr",
    "mitigations=off",
    "audit=0",
    "apparmor=0",
    "cryptomgr.notests",
    "random.trust_cpu=on",
    "8250.nr_uarts=1",
    "panic=-1",
    # Sandboxes have no IPv6 egress (net/policy.py); without the stack the guest also spends no
    # time on link-local addresses and neighbour discovery after every boot and restore.
    "ipv6.disable=1",
)
ROOT_DEVICE = "/dev/vda"
# The hostname every guest boots with; the identity op renames it before anyone sees it.
BOOT_HOSTNAME = "isorun"
MEMORY_BACKEND_ID = "mem"


@dataclass(frozen=True, slots=True)
class VMSpec:
    """What one VM gets. ``disk`` is the image's erofs file, or None to stay in the initramfs.
    ``mem_path`` puts guest RAM in that file (a template's, on tmpfs), mapped shared when
    ``mem_shared`` (the template itself) and privately, copy-on-write, when not (its clones).
    ``nic`` adds the network card; its VM must be started inside a slot's namespace.
    """

    vm_id: str
    vcpus: int = 1
    mem_mib: int = 256
    disk: Path | None = None
    mem_path: Path | None = None
    mem_shared: bool = False
    nic: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.vcpus <= 64:
            raise ValueError(f"vcpus must be between 1 and 64, got {self.vcpus}")
        if not 128 <= self.mem_mib <= 65536:
            raise ValueError(f"mem_mib must be between 128 and 65536, got {self.mem_mib}")
        if self.mem_shared and self.mem_path is None:
            raise ValueError("mem_shared needs a mem_path")


@dataclass(frozen=True, slots=True)
class RunPaths:
    """The files of one running VM, all inside its run folder."""

    root: Path

    @property
    def qmp(self) -> Path:
        return self.root / "qmp.sock"

    @property
    def agent(self) -> Path:
        return self.root / "agent.sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "qemu.pid"


def kernel_cmdline(spec: VMSpec, caps: HostCapabilities) -> str:
    args = list(KERNEL_ARGS)
    if caps.accel == "tcg":
        args += [f"tsc_early_khz={caps.tsc_khz}", "norandmaps"]
    if spec.disk is not None:
        args.append(f"isorun.root={ROOT_DEVICE}")
    args.append(f"isorun.hostname={BOOT_HOSTNAME}")
    if spec.nic:
        args.append(f"isorun.ip={GUEST_IP_ARG}")
    return " ".join(args)


def build_argv(spec: VMSpec, caps: HostCapabilities, boot: BootFiles, paths: RunPaths) -> list[str]:
    accel = (
        ["-accel", "kvm", "-cpu", "host"]
        if caps.accel == "kvm"
        else ["-accel", "tcg", "-cpu", "max"]
    )
    argv = [
        caps.qemu_binary,
        "-name", spec.vm_id,
        "-M", f"microvm,memory-backend={MEMORY_BACKEND_ID}",
        *accel,
        "-smp", str(spec.vcpus),
        "-m", f"{spec.mem_mib}M",
        "-object", memory_backend(spec),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio",
        "-kernel", str(boot.kernel),
        "-initrd", str(boot.initramfs),
        "-append", kernel_cmdline(spec, caps),
        "-qmp", f"unix:{_opt(paths.qmp)},server=on,wait=off",
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=agent,path={_opt(paths.agent)},server=on,wait=off",
        "-device", f"virtserialport,chardev=agent,name={PORT_NAME}",
    ]  # fmt: skip
    if spec.disk is not None:
        argv += [
            "-drive", f"id=root,file={_opt(spec.disk)},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=root",
        ]  # fmt: skip
    if spec.nic:
        argv += [
            "-netdev", f"tap,id=net0,ifname={TAP},script=no,downscript=no",
            "-device", f"virtio-net-device,netdev=net0,mac={GUEST_MAC}",
        ]  # fmt: skip
    return argv


def memory_backend(spec: VMSpec) -> str:
    """The ``-object`` value holding guest RAM (see the module docstring)."""
    size = f"id={MEMORY_BACKEND_ID},size={spec.mem_mib}M"
    if spec.mem_path is None:
        return f"memory-backend-ram,{size}"
    share = "on" if spec.mem_shared else "off"
    return f"memory-backend-file,{size},mem-path={_opt(spec.mem_path)},share={share}"


def _opt(path: Path) -> str:
    """``path`` for use inside a QEMU option string, where a comma would start a new option."""
    text = str(path)
    if "," in text:
        raise ValueError(f"path {text!r} contains a comma, which QEMU options cannot carry")
    return text
