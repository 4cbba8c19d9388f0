"""Sandboxes: an OCI image booted in a microVM, with the image's defaults applied to every exec.

```
Runtime.start()    boot files (kernel ELF + initramfs) ─► host capabilities (KVM or TCG)
Runtime.create()   refuse floating tags ─► reserve vCPUs and memory (NoRoom) ─► pull image
                   (erofs disk, cached) ─► MicroVM.start(); a failure frees the reservation
Sandbox.exec()     image Env/WorkingDir/User merged under the request ─► agent exec stream
Runtime.aclose()   destroy every sandbox: no QEMU, socket or run folder survives
```
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypedDict

from typing_extensions import Unpack

from isorun_hostd.agent_channel import AgentChannel, AgentError, ExecRequest, Process
from isorun_hostd.config import Settings
from isorun_hostd.images import (
    ImageDisk,
    ImageStore,
    PullProgress,
    RegistryCredentials,
    refuse_floating,
)
from isorun_hostd.vm import HostCapabilities, MicroVM, VMSpec, bootfiles
from isorun_hostd.vm.machine import remove_stale_run_dirs
from isorun_hostd.vm.probe import host_capabilities

log = logging.getLogger(__name__)

# Agent sandboxes mostly wait on a model or on I/O, so a node hands out more vCPUs than it has.
VCPU_OVERCOMMIT = 8


class RuntimeRefused(Exception):
    """The runtime refused a create before touching the image or QEMU."""


class NoRoom(RuntimeRefused):
    """This node has no room for {vcpus} vCPUs and {mem_mib} MiB."""


class DuplicateSandbox(RuntimeRefused):
    """A sandbox with this id exists already on this node."""


@dataclass(frozen=True, slots=True)
class Capacity:
    """What this node hands out, and how much of it live and booting sandboxes hold."""

    vcpus_total: int
    memory_mib_total: int
    vcpus_allocated: int
    memory_mib_allocated: int


class ExecOptions(TypedDict, total=False):
    """Per-exec options; each one left out falls back to the image's default."""

    env: dict[str, str]
    cwd: str
    user: str
    stdin: bool
    timeout_s: float


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Sandbox:
    """A running sandbox: files and processes go through ``channel``; exec adds image defaults."""

    def __init__(self, sandbox_id: str, image: ImageDisk, vm: MicroVM) -> None:
        self.id = sandbox_id
        self.image = image
        self.vm = vm

    @property
    def channel(self) -> AgentChannel:
        return self.vm.channel

    def exec_request(self, command: list[str] | str, **options: Unpack[ExecOptions]) -> ExecRequest:
        """An exec request with the image's Env, WorkingDir and User under the caller's values."""
        config = self.image.config
        env = dict(item.split("=", 1) for item in config.env if "=" in item)
        env.setdefault("PATH", DEFAULT_PATH)
        env.setdefault("HOSTNAME", self.vm.spec.hostname)
        env.update(options.get("env") or {})
        return ExecRequest(
            argv=command if isinstance(command, list) else None,
            shell=command if isinstance(command, str) else None,
            env=env,
            cwd=options.get("cwd") or config.working_dir or "/",
            user=options.get("user") or config.user or "root",
            stdin=options.get("stdin", False),
            timeout_ms=round(options.get("timeout_s", 0) * 1000),
        )

    async def exec(self, command: list[str] | str, **options: Unpack[ExecOptions]) -> Process:
        """Start a process: an argv list, or a string for ``/bin/sh -c``."""
        return await self.channel.exec(self.exec_request(command, **options))

    async def exec_with_input(
        self, command: list[str] | str, data: bytes, **options: Unpack[ExecOptions]
    ) -> Process:
        """Start a process, send ``data`` to its stdin whole and close it.

        Callers keep ``data`` within one credit window (256 KiB), so neither send waits on the
        process reading it. If the agent refuses the input, the process is detached.
        """
        options["stdin"] = True
        process = await self.exec(command, **options)
        try:
            await process.write_stdin(data)
            await process.close_stdin()
        except AgentError:
            process.detach()
            raise
        return process


class Runtime:
    """Owns the boot files, the host capabilities, the image store and every live sandbox."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.images = ImageStore(
            settings.images_dir,
            credentials={
                host: RegistryCredentials(username=login.username, password=login.password)
                for host, login in settings.registry_logins.items()
            },
            insecure_registries=settings.insecure_registries,
        )
        self._boot: bootfiles.BootFiles | None = None
        self._caps: HostCapabilities | None = None
        self._sandboxes: dict[str, Sandbox] = {}
        # (vcpus, mem_mib) held per sandbox id, from the create's start: booting ones count.
        self._held: dict[str, tuple[int, int]] = {}
        # References pulled by this process; the disk sidecars only name each disk's builder.
        self._pulled: set[str] = set()

    @property
    def boot(self) -> bootfiles.BootFiles:
        assert self._boot is not None, "Runtime.start() first"
        return self._boot

    @property
    def caps(self) -> HostCapabilities:
        assert self._caps is not None, "Runtime.start() first"
        return self._caps

    @property
    def sandboxes(self) -> list[Sandbox]:
        """The sandboxes alive now."""
        return list(self._sandboxes.values())

    def get(self, sandbox_id: str) -> Sandbox | None:
        return self._sandboxes.get(sandbox_id)

    def capacity(self) -> Capacity:
        s = self.settings
        return Capacity(
            vcpus_total=s.capacity_vcpus or (os.cpu_count() or 1) * VCPU_OVERCOMMIT,
            memory_mib_total=s.capacity_memory_mib or _host_memory_mib(),
            vcpus_allocated=sum(vcpus for vcpus, _ in self._held.values()),
            memory_mib_allocated=sum(mem for _, mem in self._held.values()),
        )

    def cached_images(self) -> set[str]:
        """References whose disk this node holds: those pulled here and the disks' builders."""
        references = set(self._pulled)
        disks = self.settings.images_dir / "disks"
        for sidecar in disks.glob("*.json") if disks.is_dir() else ():
            try:
                document = json.loads(sidecar.read_text())
                references.update((document["reference"], document["pinned"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a disk being replaced; the next look sees it
        return references

    async def start(self) -> None:
        """Prepare the boot files and probe the host.

        Raises:
            BootFilesError: the kernel, its modules or the agent binary is missing.
            FileNotFoundError: QEMU is not installed.
        """
        s = self.settings
        for name in remove_stale_run_dirs(s.run_dir):
            log.warning("removed the run folder of VM %s, whose QEMU is gone", name)
        self._boot = await asyncio.to_thread(
            bootfiles.prepare, s.boot_dir, s.agent_path, s.kernel_path, s.modules_dir
        )
        forced: Literal["kvm", "tcg"] | None = None if s.accel == "auto" else s.accel
        self._caps = await host_capabilities(
            s.qemu_binary, self._boot, s.run_dir, s.state_dir / "accel.json", forced
        )
        log.info("accelerator %s: %s", self._caps.accel, self._caps.accel_reason)

    async def create(
        self,
        image: str,
        *,
        vcpus: int = 1,
        mem_mib: int = 256,
        sandbox_id: str | None = None,
        progress: Callable[[PullProgress], None] | None = None,
    ) -> Sandbox:
        """Pull ``image`` and boot a sandbox from it, named ``sandbox_id`` when given (a
        backend that places sandboxes names them, so that its rows and the VMs share ids).

        Raises:
            NoRoom: the vCPUs or memory asked for would exceed this node's capacity.
            DuplicateSandbox: ``sandbox_id`` is taken.
            ImageError: the reference is floating or invalid, or the pull failed.
            VMError: the VM did not boot. Nothing is left behind in any case.
        """
        assert self._boot is not None, "Runtime.start() first"
        refuse_floating(image)
        sandbox_id = sandbox_id or f"sb-{secrets.token_hex(6)}"
        if sandbox_id in self._held:
            raise DuplicateSandbox(f"sandbox {sandbox_id} exists already on this node")
        room = self.capacity()
        if (
            room.vcpus_allocated + vcpus > room.vcpus_total
            or room.memory_mib_allocated + mem_mib > room.memory_mib_total
        ):
            raise NoRoom(f"this node has no room for {vcpus} vCPUs and {mem_mib} MiB")
        self._held[sandbox_id] = (vcpus, mem_mib)
        try:
            disk = await self.images.pull(image, progress=progress)
            self._pulled.add(image)
            spec = VMSpec(
                sandbox_id, vcpus=vcpus, mem_mib=mem_mib, disk=disk.disk_path, hostname=sandbox_id
            )
            vm = MicroVM(spec, self.caps, self._boot, self.settings.run_dir)
            await vm.start(timeout_s=self.settings.boot_timeout_s)
        except BaseException:
            self._held.pop(sandbox_id, None)
            raise
        sandbox = Sandbox(sandbox_id, disk, vm)
        self._sandboxes[sandbox_id] = sandbox
        return sandbox

    async def destroy(self, sandbox: Sandbox) -> None:
        self._sandboxes.pop(sandbox.id, None)
        try:
            await sandbox.vm.destroy()
        finally:
            self._held.pop(sandbox.id, None)

    async def aclose(self) -> None:
        """Destroy every sandbox this runtime started."""
        sandboxes = list(self._sandboxes.values())
        self._sandboxes.clear()
        await asyncio.gather(*(s.vm.destroy() for s in sandboxes), return_exceptions=True)
        for sandbox in sandboxes:
            self._held.pop(sandbox.id, None)


def _host_memory_mib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("/proc/meminfo has no MemTotal")
