"""Sandboxes: an OCI image booted in a microVM, with the image's defaults applied to every exec.

```
Runtime.start()    boot files (kernel ELF + initramfs) ─► host capabilities (KVM or TCG)
Runtime.create()   refuse floating tags ─► reserve vCPUs and memory (NoRoom) ─► pull image
                   (erofs disk, cached) ─► a clone of the shape's template (templates.py: built
                   on first use, restored from the warm pool) or else a cold boot ─► identity op
                   (hostname, machine-id, entropy, clock) answered; a failure frees the reservation
                   ─► network: bind the VM's slot to the sandbox's egress policy and secrets
                   (net/host.py), trust the CAs it needs
Sandbox.exec()     image Env/WorkingDir/User and the secrets' placeholders merged under the
                   request ─► agent exec stream
Runtime.snapshot() save the VM (it pauses, then continues) ─► snapshots/<id>
Runtime.fork(n)    take n restore targets (waiting ones first) ┬► n restores, each with a
                   save once to a transient stream (no fsync)  ┘  fresh identity
                   (the targets' QEMUs start while the source saves)
Runtime.hibernate  save ─► destroy the VM (no RAM, no vCPU held) ─► hibernated/<sandbox id>
Runtime.resume     restore under the same id and hostname, with fresh entropy and clock
Runtime.aclose()   destroy every sandbox, template and pool QEMU: no QEMU, socket, run folder
                   or template file survives

a restore:  target: a waiting QEMU of the shape (vm/incoming.py) or a new one ─► load the
            stream ─► cont ─► agent handshake ─► identity op; the targets of that shape are
            refilled in the background soon after (at once after each save: a resume or fork
            may follow)
```
Each of these steps that succeeds, and each exec's start (or the guest's refusal) and end, is an
entry in ``Runtime.audit``, the node's HMAC chain (audit/, docs/audit.md), opened first by start.
A restore repeats the saved VM's argv (shape, image disk, boot files) and is refused with a clear
error when any of those changed since the save. Every VM boots with the same hostname
(``BOOT_HOSTNAME``) and gets its sandbox's from the identity op, so no argv names a sandbox.

Capacity: a sandbox holds its vCPUs and memory from the start of its create. Templates, pool
entries and waiting restore targets hold no reservation: a template's RAM file (tmpfs) is
bounded by ``template_budget_bytes``, a pool entry is a guest that runs no user code yet
(~40-50 MiB) and a restore target a QEMU that runs no guest yet (~40 MiB, ``restore_pool_size``
per shape, up to ``incoming.MAX_SHAPES`` shapes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict

from typing_extensions import Unpack

from isorun_hostd.agent_channel import (
    AgentChannel,
    AgentError,
    ExecEnd,
    ExecRequest,
    Process,
    ShellAttachment,
    ShellRequest,
    Tunnel,
)
from isorun_hostd.agent_channel.protocol import SHELL_SCROLLBACK_BYTES, ShellOpened
from isorun_hostd.audit import AuditChain
from isorun_hostd.config import Settings
from isorun_hostd.images import (
    ImageDisk,
    ImageStore,
    PullProgress,
    RegistryCredentials,
    refuse_floating,
)
from isorun_hostd.net.host import HostNetwork
from isorun_hostd.net.spec import EgressPolicy, NetworkSpec
from isorun_hostd.proxy.credentials import guest_env
from isorun_hostd.snapshots import SnapshotMeta, SnapshotStore
from isorun_hostd.templates import Templates
from isorun_hostd.vm import HostCapabilities, MicroVM, VMSpec, bootfiles
from isorun_hostd.vm.cmdline import BOOT_HOSTNAME
from isorun_hostd.vm.errors import SnapshotError
from isorun_hostd.vm.identity import fresh_identity
from isorun_hostd.vm.incoming import IncomingPool, Shape, shape_of
from isorun_hostd.vm.machine import remove_stale_run_dirs
from isorun_hostd.vm.probe import host_capabilities
from isorun_hostd.vm.state import VMState

log = logging.getLogger(__name__)

# Where guests look for trusted CAs: the bundle OpenSSL, curl and Debian's pip read, and the
# folder update-ca-certificates rebuilds it from.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
GUEST_CA_FILE = "/usr/local/share/ca-certificates/isorun.crt"
# Python's requests and httpx (certifi) and Node keep their own stores; these point them at
# the guest's, which then holds hostd's CAs too.
CA_ENV = {
    "SSL_CERT_FILE": CA_BUNDLE,
    "REQUESTS_CA_BUNDLE": CA_BUNDLE,
    "NODE_EXTRA_CA_CERTS": GUEST_CA_FILE,
}

# Agent sandboxes mostly wait on a model or on I/O, so a node hands out more vCPUs than it has.
VCPU_OVERCOMMIT = 8
MAX_FORKS = 16


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

    def fits(self, vcpus: int, mem_mib: int) -> bool:
        """Whether ``vcpus`` and ``mem_mib`` more stay within the totals."""
        return (
            self.vcpus_allocated + vcpus <= self.vcpus_total
            and self.memory_mib_allocated + mem_mib <= self.memory_mib_total
        )


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

    def __init__(
        self,
        sandbox_id: str,
        image: ImageDisk,
        vm: MicroVM,
        *,
        hostname: str,
        audit: AuditChain,
        network: NetworkSpec | None = None,
        extra_ca: bool = False,
    ) -> None:
        self.id = sandbox_id
        # What its slot enforces (egress policy) and its proxy injects (secrets).
        self.network = network or NetworkSpec()
        # Its trust store holds CAs hostd added (Runtime._trust), which runtimes with their
        # own store only see through these variables.
        self.extra_ca = extra_ca
        self.audit = audit
        self.image = image
        # Its run folder is named by vm.spec.vm_id, which differs from ``id`` for a VM that
        # came from the warm pool.
        self.vm = vm
        # Set in the guest by the identity op (every VM boots as BOOT_HOSTNAME).
        self.hostname = hostname

    @property
    def channel(self) -> AgentChannel:
        return self.vm.channel

    async def drops(self) -> dict[str, int] | None:
        """Packets its namespace refused so far (``dropped``, ``spoofed``); None on a node
        without a network. Raises NetworkError (nft refused)."""
        return await self.vm.slot.drops() if self.vm.slot is not None else None

    def environment(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """The image's Env with the sandbox's own variables, under the caller's ``env``."""
        merged = dict(item.split("=", 1) for item in self.image.config.env if "=" in item)
        merged.setdefault("PATH", DEFAULT_PATH)
        merged.setdefault("HOSTNAME", self.hostname)
        merged.update(guest_env(self.network))
        if self.extra_ca:
            merged.update(CA_ENV)
        merged.update(env or {})
        return merged

    def exec_request(self, command: list[str] | str, **options: Unpack[ExecOptions]) -> ExecRequest:
        """An exec request with the image's Env, WorkingDir and User under the caller's values."""
        config = self.image.config
        return ExecRequest(
            argv=command if isinstance(command, list) else None,
            shell=command if isinstance(command, str) else None,
            env=self.environment(options.get("env")),
            cwd=options.get("cwd") or config.working_dir or "/",
            user=options.get("user") or config.user or "root",
            stdin=options.get("stdin", False),
            timeout_ms=round(options.get("timeout_s", 0) * 1000),
        )

    async def exec(self, command: list[str] | str, **options: Unpack[ExecOptions]) -> Process:
        """Start a process: an argv list, or a string for ``/bin/sh -c``. Its start (or the
        guest's refusal) and its end (if a reader sees it) are audit entries; the caller's env
        values are not."""
        request = self.exec_request(command, **options)
        fields: dict[str, object] = {
            "command": request.argv if request.argv is not None else request.shell,
            "cwd": request.cwd,
            "user": request.user,
            "env_names": sorted(options.get("env") or {}),
        }
        try:
            process = await self.channel.exec(request)
        except AgentError as exc:
            self.audit.record(self.id, "exec.refused", {**fields, "error": exc.code})
            raise
        self.audit.record(self.id, "exec.start", {"pid": process.pid, **fields})

        def ended(end: ExecEnd) -> None:
            self.audit.record(self.id, "exec.end", {"pid": process.pid, **end.model_dump()})

        process.on_end = ended
        return process

    async def open_shell(
        self,
        argv: list[str] | None = None,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        cols: int = 80,
        rows: int = 24,
        scrollback_bytes: int = SHELL_SCROLLBACK_BYTES,
    ) -> ShellOpened:
        """Start a persistent shell on a terminal in the guest (protocol.md 5.6): ``argv``,
        else a login bash, else ``/bin/sh`` for images without bash. Audited as ``shell.open``.

        Raises:
            pydantic.ValidationError: a size or the scrollback is out of bounds.
            AgentError: the guest refused (``not_found``, ``busy``: too many shells, ...).
        """
        config = self.image.config
        candidates = [argv] if argv else [["/bin/bash", "-l"], ["/bin/sh"]]
        fields: dict[str, object] = {
            "cwd": cwd or config.working_dir or "/",
            "user": user or config.user or "root",
            "env_names": sorted(env or {}),
        }
        for i, command in enumerate(candidates):
            request = ShellRequest(
                argv=command,
                env=self.environment(env),
                cols=cols,
                rows=rows,
                scrollback_bytes=scrollback_bytes,
                cwd=str(fields["cwd"]),
                user=str(fields["user"]),
            )
            try:
                opened = await self.channel.open_shell(request)
            except AgentError as exc:
                if exc.code == "not_found" and i + 1 < len(candidates):
                    continue
                self.audit.record(
                    self.id, "shell.refused", {"command": command, **fields, "error": exc.code}
                )
                raise
            self.audit.record(
                self.id,
                "shell.open",
                {"shell_id": opened.id, "pid": opened.pid, "command": command, **fields},
            )
            return opened
        raise AssertionError("unreachable: the last candidate returns or raises")

    @contextlib.asynccontextmanager
    async def attached_shell(
        self, shell_id: str, *, write: bool = False, scrollback: bool = True
    ) -> AsyncIterator[ShellAttachment]:
        """Follow a shell for the block (the writer with ``write``), then detach; the attach
        and the detach (bytes each way, the end if it came) are audit entries."""
        attachment = await self.channel.attach_shell(shell_id, write=write, scrollback=scrollback)
        self.audit.record(self.id, "shell.attach", {"shell_id": shell_id, "write": write})
        try:
            yield attachment
        finally:
            attachment.detach()
            end = attachment.end.model_dump() if attachment.end is not None else None
            self.audit.record(
                self.id,
                "shell.detach",
                {
                    "shell_id": shell_id,
                    "bytes_in": attachment.bytes_in,
                    "bytes_out": attachment.bytes_out,
                    "end": end,
                },
            )

    async def close_shell(self, shell_id: str) -> None:
        """Hang the shell up and forget it (protocol.md 5.6); audited as ``shell.close``."""
        await self.channel.close_shell(shell_id)
        self.audit.record(self.id, "shell.close", {"shell_id": shell_id})

    async def connect_port(self, port: int) -> Tunnel:
        """A TCP connection to ``port`` on the guest's loopback (protocol.md 5.7). Not audited
        per connection: URL accounting happens where the URLs are served."""
        return await self.channel.connect_port(port)

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
            tag_ttl_s=settings.image_tag_ttl_s,
        )
        self._boot: bootfiles.BootFiles | None = None
        self._caps: HostCapabilities | None = None
        self._sandboxes: dict[str, Sandbox] = {}
        # (vcpus, mem_mib) held per sandbox id, from the create's start: booting ones count.
        self._held: dict[str, tuple[int, int]] = {}
        # References pulled by this process; the disk sidecars only name each disk's builder.
        self._pulled: set[str] = set()
        self.snapshots = SnapshotStore(settings.state_dir / "snapshots")
        self.hibernations = SnapshotStore(settings.state_dir / "hibernated")
        self._fork_streams = SnapshotStore(settings.state_dir / "forks")
        # Opened by start(); pass ``audit.record`` wherever an AuditSink is wanted.
        self.audit = AuditChain(settings.audit_dir, key_file=settings.audit_key_file)
        self.network: HostNetwork | None = None
        self._hibernated_networks: dict[str, NetworkSpec] = {}
        # Discarded snapshot folders being removed in a thread (see _remove_later).
        self._removals: set[asyncio.Task[None]] = set()
        self.templates: Templates | None = None
        self.incoming: IncomingPool | None = None
        self.cold_boots = 0

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
            AuditKeyError: the audit key is readable by others or malformed.
        """
        s = self.settings
        await asyncio.to_thread(self.audit.open)
        for name in remove_stale_run_dirs(s.run_dir):
            log.warning("removed the run folder of VM %s, whose QEMU is gone", name)
        for store in (self.snapshots, self.hibernations, self._fork_streams):
            for name in store.sweep(older_than_s=0 if store is self._fork_streams else 60):
                log.warning("removed %s, an unfinished save or a discarded one", store.root / name)
        self._boot = await asyncio.to_thread(
            bootfiles.prepare, s.boot_dir, s.agent_path, s.kernel_path, s.modules_dir
        )
        forced: Literal["kvm", "tcg"] | None = None if s.accel == "auto" else s.accel
        self._caps = await host_capabilities(
            s.qemu_binary, self._boot, s.run_dir, s.state_dir / "accel.json", forced
        )
        log.info("accelerator %s: %s", self._caps.accel, self._caps.accel_reason)
        if s.network:
            self.network = HostNetwork(s, self.audit.record)
            await self.network.start()
        self.incoming = IncomingPool(
            self._caps, self._boot, s.run_dir, size=s.restore_pool_size, network=self.network
        )
        if s.templates:
            self.templates = Templates(
                s.template_dir / f"{s.templates_prefix}-{os.getpid()}-{secrets.token_hex(3)}",
                self._caps,
                self._boot,
                s.run_dir,
                pool_size=s.template_pool_size,
                budget_bytes=s.template_budget_bytes,
                boot_timeout_s=s.boot_timeout_s,
                network=self.network,
            )
            await asyncio.to_thread(self.templates.start)

    def pool_vms(self) -> list[MicroVM]:
        """VMs that are no sandbox: pool entries waiting for a template, template builds and
        QEMUs waiting for a state stream."""
        vms = self.templates.pool_vms() if self.templates is not None else []
        return vms + (self.incoming.vms() if self.incoming is not None else [])

    async def create(
        self,
        image: str,
        *,
        vcpus: int = 1,
        mem_mib: int = 256,
        sandbox_id: str | None = None,
        network: NetworkSpec | None = None,
        progress: Callable[[PullProgress], None] | None = None,
    ) -> Sandbox:
        """Pull ``image`` and boot a sandbox from it, named ``sandbox_id`` when given (a
        backend that places sandboxes names them, so that its rows and the VMs share ids),
        with ``network``'s egress policy and secrets (default: no egress at all).

        Raises:
            PolicyError: the egress policy does not compile (a ValueError).
            NoRoom: the vCPUs or memory asked for would exceed this node's capacity.
            DuplicateSandbox: ``sandbox_id`` is taken.
            ImageError: the reference is floating or invalid, or the pull failed.
            VMError: the VM did not boot. Nothing is left behind in any case.
        """
        assert self._boot is not None, "Runtime.start() first"
        refuse_floating(image)
        network = self._check_network(network)
        sandbox_id = sandbox_id or _new_id()
        self._reserve(sandbox_id, vcpus, mem_mib)
        try:
            disk = await self.images.pull(image, progress=progress)
            self._pulled.add(image)
            vm = None
            if self.templates is not None:
                key = self.templates.key(disk, vcpus, mem_mib)
                vm = await self.templates.clone(key, sandbox_id=sandbox_id, hostname=sandbox_id)
            if vm is None:
                vm = await self._boot_cold(sandbox_id, disk, vcpus, mem_mib)
            await self._connect(vm, sandbox_id, network)
        except BaseException:
            self._held.pop(sandbox_id, None)
            raise
        sandbox = Sandbox(
            sandbox_id,
            disk,
            vm,
            hostname=sandbox_id,
            audit=self.audit,
            network=network,
            extra_ca=bool(self._extra_cas(network)),
        )
        self._sandboxes[sandbox_id] = sandbox
        self.audit.record(
            sandbox_id,
            "sandbox.create",
            {"image": image, "image_pinned": disk.pinned, "vcpus": vcpus, "mem_mib": mem_mib},
        )
        return sandbox

    async def _boot_cold(
        self, sandbox_id: str, disk: ImageDisk, vcpus: int, mem_mib: int
    ) -> MicroVM:
        spec = VMSpec(
            sandbox_id,
            vcpus=vcpus,
            mem_mib=mem_mib,
            disk=disk.disk_path,
            nic=self.network is not None,
        )
        vm = MicroVM(spec, self.caps, self.boot, self.settings.run_dir, self.network)
        await vm.start(timeout_s=self.settings.boot_timeout_s)
        try:
            # The identity round trip names the guest and proves its agent answers requests.
            await vm.channel.identity(fresh_identity(sandbox_id))
        except BaseException:
            await vm.destroy()
            raise
        self.cold_boots += 1
        return vm

    def _check_network(self, network: NetworkSpec | None) -> NetworkSpec:
        """``network`` (or the default) if this node can give it; raises ValueError."""
        network = network or NetworkSpec()
        if self.network is None:
            if network != NetworkSpec():
                raise ValueError(
                    "this node runs without a network (ISORUN_NETWORK=false): egress policies "
                    "and secrets need one"
                )
            return network
        self.network.compile(network.policy)
        return network

    async def _connect(self, vm: MicroVM, sandbox_id: str, network: NetworkSpec) -> None:
        """Bind ``vm``'s slot to the sandbox and make the guest trust the CAs it needs; on a
        failure ``vm`` is destroyed."""
        if self.network is None:
            return
        try:
            assert vm.slot is not None
            await self.network.bind(vm.slot, sandbox_id, network)
            await self._trust(vm, network)
        except BaseException:
            if vm.slot is not None:
                self.network.unbind(vm.slot)
            await vm.destroy()
            raise

    def _extra_cas(self, network: NetworkSpec) -> bytes:
        """The configured guest CAs, and the credential proxy's when the sandbox has secrets
        (its transparent mode presents certificates from it), as one PEM file."""
        if self.network is None:
            return b""
        pems = list(self.network.guest_cas)
        if network.secrets:
            pems.append(self.network.ca.cert_pem)
        return b"".join(pem if pem.endswith(b"\n") else pem + b"\n" for pem in pems)

    async def _trust(self, vm: MicroVM, network: NetworkSpec) -> None:
        """Add ``_extra_cas`` to the guest's trust store: the Debian/Ubuntu/Alpine bundle and
        the folder update-ca-certificates reads (so tools that rebuild the bundle keep them).
        A restored guest that trusts them already (its source did) is left as it is."""
        extra = self._extra_cas(network)
        if not extra:
            return
        with contextlib.suppress(AgentError):
            _, body = await vm.channel.read_file(GUEST_CA_FILE)
            if b"".join([chunk async for chunk in body]) == extra:
                return
        await vm.channel.write_file(GUEST_CA_FILE, extra, parents=True)
        await vm.channel.write_file(CA_BUNDLE, extra, append=True, parents=True)

    async def set_policy(self, sandbox: Sandbox, policy: EgressPolicy) -> NetworkSpec:
        """Change a running sandbox's egress policy; new connections and DNS answers follow
        it at once, connections already open continue.

        Raises:
            PolicyError: the policy does not compile (nothing changed).
            ValueError: this node runs without a network.
        """
        if self.network is None or sandbox.vm.slot is None:
            raise ValueError("this node runs without a network (ISORUN_NETWORK=false)")
        sandbox.network = await self.network.set_policy(sandbox.vm.slot, policy)
        return sandbox.network

    def _reserve(self, sandbox_id: str, vcpus: int, mem_mib: int) -> None:
        if sandbox_id in self._held:
            raise DuplicateSandbox(f"sandbox {sandbox_id} exists already on this node")
        if not self.capacity().fits(vcpus, mem_mib):
            raise NoRoom(f"this node has no room for {vcpus} vCPUs and {mem_mib} MiB")
        self._held[sandbox_id] = (vcpus, mem_mib)

    # -- snapshots ---------------------------------------------------------------------------

    async def snapshot(self, sandbox: Sandbox, *, snapshot_id: str | None = None) -> SnapshotMeta:
        """Save ``sandbox`` under a new snapshot id; it pauses for the save, then continues.

        Raises:
            SnapshotError: the save failed (disk full, VM gone); the sandbox is unharmed.
        """
        meta = await self._save(
            sandbox, self.snapshots, snapshot_id or f"snap-{secrets.token_hex(6)}", "snapshot"
        )
        self._refill(sandbox)
        fields = {"snapshot_id": meta.snapshot_id, "size_bytes": meta.size_bytes}
        self.audit.record(sandbox.id, "sandbox.snapshot", fields)
        return meta

    async def from_snapshot(
        self,
        snapshot_id: str,
        *,
        sandbox_id: str | None = None,
        network: NetworkSpec | None = None,
    ) -> Sandbox:
        """A new sandbox continuing from a snapshot, with its own identity and ``network``
        (snapshots keep no secrets: the caller passes the network again).

        Raises:
            SnapshotNotFound: no such snapshot here.
            SnapshotError: the state file is missing or corrupt, or this node can no longer run
                it (boot files, accelerator or image disk changed). Nothing is left behind.
            NoRoom, DuplicateSandbox: as for ``create``.
        """
        meta = self.snapshots.get(snapshot_id)
        network = self._check_network(network)
        sandbox_id = sandbox_id or _new_id()
        sandbox = await self._restore(
            meta,
            self.snapshots.state_path(snapshot_id),
            sandbox_id,
            hostname=sandbox_id,
            network=network,
        )
        self._audit_create(sandbox, snapshot_id=snapshot_id)
        return sandbox

    async def fork(self, sandbox: Sandbox, count: int = 1) -> list[Sandbox]:
        """``count`` new sandboxes, each continuing from ``sandbox`` as it is now (its files,
        its processes, its network policy and secrets), each with fresh entropy, clock,
        identity and a network slot of its own. The source pauses for one
        save and continues. All clones or none: a failure destroys those already made.

        Raises:
            ValueError: ``count`` is out of range.
            SnapshotError: the source could not be saved (not running, disk full) or a clone
                could not be restored; the source is unharmed.
            NoRoom: not enough room for every clone.
        """
        if not 1 <= count <= MAX_FORKS:
            raise ValueError(f"fork count must be between 1 and {MAX_FORKS}, got {count}")
        vcpus, mem_mib = sandbox.vm.spec.vcpus, sandbox.vm.spec.mem_mib
        if not self.capacity().fits(count * vcpus, count * mem_mib):
            raise NoRoom(
                f"this node has no room for {count} clones of {vcpus} vCPUs and {mem_mib} MiB"
            )
        stream_id = f"fork-{secrets.token_hex(6)}"
        # A waiting target is taken, none is waited for: the new ones launch during the save.
        targets = [await self._target(shape_of(sandbox.vm.spec), wait=False) for _ in range(count)]
        # New targets' QEMUs start while the source saves: different processes, other CPUs.
        # All are awaited before any cleanup, so that no launch outlives a failed fork.
        try:
            meta, *_ = await asyncio.gather(
                self._save(sandbox, self._fork_streams, stream_id, "snapshot", durable=False),
                *(_launch(vm) for vm in targets),
                return_exceptions=True,
            )
        except BaseException:  # cancelled
            await asyncio.gather(*(vm.destroy() for vm in targets), return_exceptions=True)
            raise
        if not isinstance(meta, SnapshotMeta):
            await asyncio.gather(*(vm.destroy() for vm in targets), return_exceptions=True)
            assert isinstance(meta, BaseException)
            raise meta
        try:
            results = await asyncio.gather(
                *(
                    self._restore(
                        meta,
                        self._fork_streams.state_path(stream_id),
                        clone_id,
                        hostname=clone_id,
                        target=target,
                        network=sandbox.network,
                    )
                    for clone_id, target in zip(
                        (_new_id() for _ in range(count)), targets, strict=True
                    )
                ),
                return_exceptions=True,
            )
        finally:
            self._remove_later(self._fork_streams.discard(stream_id))
        clones = [r for r in results if isinstance(r, Sandbox)]
        failures = [r for r in results if isinstance(r, BaseException)]
        for clone in clones:
            self._audit_create(clone, forked_from=sandbox.id)
        if failures:
            await asyncio.gather(*(self.destroy(c) for c in clones), return_exceptions=True)
            raise failures[0]
        self.audit.record(sandbox.id, "sandbox.fork", {"clone_ids": [c.id for c in clones]})
        return clones

    async def hibernate(self, sandbox: Sandbox) -> SnapshotMeta:
        """Save ``sandbox`` to disk and stop its VM: it holds no RAM or vCPU until ``resume``.

        Raises:
            SnapshotError: the save failed; the sandbox keeps running, unharmed.
        """
        meta = await self._save(
            sandbox, self.hibernations, sandbox.id, "hibernation", keep_running=False
        )
        self.audit.record(sandbox.id, "sandbox.hibernate", {"size_bytes": meta.size_bytes})
        self._hibernated_networks[sandbox.id] = sandbox.network
        await self.destroy(sandbox)
        self._refill(sandbox)
        return meta

    async def resume(self, sandbox_id: str, *, network: NetworkSpec | None = None) -> Sandbox:
        """Bring a hibernated sandbox back under its id and hostname, processes and files as
        they were; also after a hostd restart. Its network is ``network`` if given, else the
        one it hibernated with (kept in memory only: secrets are never written to disk; after
        a restart the backend passes it again). The hibernation is kept if the resume fails.

        Raises:
            SnapshotNotFound: ``sandbox_id`` is not hibernated here.
            SnapshotError: the saved state is missing or corrupt, or this node changed.
        """
        meta = self.hibernations.get(sandbox_id)
        network = self._check_network(network or self._hibernated_networks.get(sandbox_id))
        sandbox = await self._restore(
            meta,
            self.hibernations.state_path(sandbox_id),
            sandbox_id,
            hostname=meta.hostname,
            network=network,
            same_machine=True,
        )
        self._remove_later(self.hibernations.discard(sandbox_id))
        self._hibernated_networks.pop(sandbox_id, None)
        self.audit.record(sandbox_id, "sandbox.resume", {})
        return sandbox

    async def _save(
        self,
        sandbox: Sandbox,
        store: SnapshotStore,
        snapshot_id: str,
        kind: Literal["snapshot", "hibernation"],
        *,
        keep_running: bool = True,
        durable: bool = True,
    ) -> SnapshotMeta:
        state = store.prepare(snapshot_id)
        try:
            size = await sandbox.vm.save(state, keep_running=keep_running, durable=durable)
            meta = SnapshotMeta(
                snapshot_id=snapshot_id,
                kind=kind,
                source_sandbox_id=sandbox.id,
                created_unix=time.time(),
                vcpus=sandbox.vm.spec.vcpus,
                mem_mib=sandbox.vm.spec.mem_mib,
                boot_hostname=BOOT_HOSTNAME,
                hostname=sandbox.hostname,
                image=sandbox.image,
                kernel=self.boot.kernel,
                initramfs=self.boot.initramfs,
                accel=self.caps.accel,
                size_bytes=size,
            )
            store.commit(meta)
        except BaseException:
            store.delete(snapshot_id)
            raise
        return meta

    async def _target(self, shape: Shape, *, wait: bool = True) -> MicroVM:
        """A VM to restore a save of ``shape`` into: a waiting one (INCOMING) if the pool has
        one (or, with ``wait``, is launching one), else a new one (CREATED), named for no
        sandbox either way."""
        vm = await self.incoming.take(shape, wait=wait) if self.incoming is not None else None
        if vm is not None:
            return vm
        # RAM in memory-backend-ram named like every VM's (cmdline.py), whatever the saved
        # VM's backend was (a template clone's is a file).
        vcpus, mem_mib, disk = shape
        spec = VMSpec(
            f"rs-{secrets.token_hex(6)}",
            vcpus=vcpus,
            mem_mib=mem_mib,
            disk=disk,
            nic=self.network is not None,
        )
        return MicroVM(spec, self.caps, self.boot, self.settings.run_dir, self.network)

    def _remove_later(self, folder: Path | None) -> None:
        """Remove a discarded snapshot folder in a thread: not on the resume's or fork's
        critical path. A hostd that dies first leaves it to the next start's sweep."""
        if folder is None:
            return
        task = asyncio.create_task(asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    def _refill(self, sandbox: Sandbox, *, later: bool = False) -> None:
        if self.incoming is not None:
            shape = shape_of(sandbox.vm.spec)
            (self.incoming.refill_later if later else self.incoming.refill)(shape)

    async def _restore(
        self,
        meta: SnapshotMeta,
        state: Path,
        sandbox_id: str,
        *,
        hostname: str,
        network: NetworkSpec,
        target: MicroVM | None = None,
        same_machine: bool = False,
    ) -> Sandbox:
        """Restore ``state`` into ``target`` (from ``_target``; one is taken if None, and a
        failed or dead one is replaced) as the sandbox ``sandbox_id``. ``same_machine`` (a
        resume) keeps the guest's machine-id: it is the machine that hibernated, not a copy,
        and the file write is the dearest step of the identity op the first time a restored
        guest runs it (~45 ms under TCG)."""
        try:
            self._check_restorable(meta)
            self._reserve(sandbox_id, meta.vcpus, meta.mem_mib)
        except BaseException:
            if target is not None:
                await target.destroy()
            raise
        try:
            if target and target.state.state is not VMState.CREATED and not target.waiting:
                await target.destroy()
                target = None
            if target is None:
                target = await self._target((meta.vcpus, meta.mem_mib, meta.image.disk_path))
            vm = target
            await vm.start(timeout_s=self.settings.boot_timeout_s, restore=state)
            started = time.perf_counter()
            await vm.channel.identity(fresh_identity(hostname, machine_id=not same_machine))
            vm.spans_ms["identity"] = (time.perf_counter() - started) * 1000
            await self._connect(vm, sandbox_id, network)
        except BaseException:
            if target is not None:
                await target.destroy()
            self._held.pop(sandbox_id, None)
            raise
        sandbox = Sandbox(
            sandbox_id,
            meta.image,
            vm,
            hostname=hostname,
            audit=self.audit,
            network=network,
            extra_ca=bool(self._extra_cas(network)),
        )
        self._sandboxes[sandbox_id] = sandbox
        self._refill(sandbox, later=True)
        return sandbox

    def _check_restorable(self, meta: SnapshotMeta) -> None:
        what = f"snapshot {meta.snapshot_id}"
        if (meta.kernel, meta.initramfs) != (self.boot.kernel, self.boot.initramfs):
            raise SnapshotError(
                f"{what} was saved with other boot files (the guest kernel or agent changed "
                "since); it cannot be restored on this node"
            )
        if meta.accel != self.caps.accel:
            raise SnapshotError(
                f"{what} was saved under {meta.accel.upper()} and this node runs "
                f"{self.caps.accel.upper()}; it cannot be restored here"
            )
        if not meta.image.disk_path.is_file():
            raise SnapshotError(
                f"{what} needs the disk of {meta.image.pinned}, which this node no longer has; "
                "pull the image again"
            )

    async def destroy(self, sandbox: Sandbox) -> None:
        if self._sandboxes.pop(sandbox.id, None) is not None:
            self.audit.record(sandbox.id, "sandbox.destroy", {})
        if self.network is not None and sandbox.vm.slot is not None:
            self.network.unbind(sandbox.vm.slot)
        try:
            await sandbox.vm.destroy()
        finally:
            self._held.pop(sandbox.id, None)

    async def aclose(self) -> None:
        """Destroy every sandbox this runtime started, its templates and its pool QEMUs."""
        sandboxes = list(self._sandboxes.values())
        self._sandboxes.clear()
        for sandbox in sandboxes:
            self.audit.record(sandbox.id, "sandbox.destroy", {"reason": "hostd shutting down"})
        await asyncio.gather(*(s.vm.destroy() for s in sandboxes), return_exceptions=True)
        for sandbox in sandboxes:
            self._held.pop(sandbox.id, None)
        if self.templates is not None:
            await self.templates.aclose()
        if self.incoming is not None:
            await self.incoming.aclose()
        if self.network is not None:
            await self.network.aclose()
        await asyncio.gather(*self._removals)
        self.audit.close()

    def _audit_create(self, sandbox: Sandbox, **origin: str) -> None:
        """``sandbox.create`` for a sandbox restored from a save; ``origin`` names the save."""
        spec = sandbox.vm.spec
        fields = {
            "image_pinned": sandbox.image.pinned,
            "vcpus": spec.vcpus,
            "mem_mib": spec.mem_mib,
        }
        self.audit.record(sandbox.id, "sandbox.create", {**fields, **origin})


async def _launch(vm: MicroVM) -> None:
    """Start a new restore target's QEMU ahead of its load; a failure is left for the restore
    to replace (the VM is destroyed already)."""
    if vm.state.state is VMState.CREATED:
        with contextlib.suppress(Exception):
            await vm.launch_incoming()


def _new_id() -> str:
    return f"sb-{secrets.token_hex(6)}"


def _host_memory_mib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("/proc/meminfo has no MemTotal")
