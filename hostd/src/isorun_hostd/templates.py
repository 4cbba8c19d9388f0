"""Templates and the warm pool: each VM shape boots once; later creates restore it.

```
clone(key, hostname)
  template of key? ──no──► build (single flight per key): make room (evict LRU) ─► boot a VM
  │                        whose RAM is <root>/<key>.partial/mem (share=on) ─► agent answers ─►
  │                        save_template: device state to dev (x-ignore-shared) ─► quit QEMU ─►
  │                        rename <key>.partial ─► <key>              (a failure leaves no file)
  ▼
  pool entry of key, alive? ──no──► fresh: QEMU -S -incoming defer ─► load dev ─► cont ─► agent
  ▼                                                                                   │
  identity(hostname) round trip ◄─────────────────────────────────────────────────────┘
  ─► the caller's. Any failure: destroy that VM, try the next way (pooled ─► fresh) ─► None:
  the caller boots cold. After each take, _bg_prepare refills the pool to pool_size:
      QEMU -S -incoming defer ─► load dev (x-ignore-shared) ─► cont ─► agent ─► warm-up
      (identity as BOOT_HOSTNAME, exec `true`) ─► waits, RUNNING, in ``Template.pool``
```
A pool entry and a clone run the template's argv with ``share=off`` plus ``-S -incoming defer``:
guest RAM is the template's file mapped privately, so a clone reads the template's pages and
copies only those it writes. The template's QEMU has quit before any clone maps the file, and
the file is never written again.

Pool entries are loaded and warmed up before a create takes one, not at the take. The load itself
is 5-12 ms, but under TCG a restored guest runs every code path untranslated once more: measured
here, the agent's handshake then took 100-170 ms, the identity op 160-230 ms and the first exec
300-500 ms; a warmed entry answers the create's identity op and first exec in ~15 and ~100-150
ms. Uniqueness is kept: an entry runs no user code before its take (its warm-up identity op
already reseeds it, as ``isorun``), and the take's identity op reseeds the kernel's RNG again and
sets the clock, hostname and machine-id before the caller sees the VM.

The key holds everything the saved RAM and device state depend on: the image (ChainID and disk),
vCPUs, memory, the boot files (content-hashed paths: a new kernel or agent is a new key), the
accelerator and the QEMU version. The arguments a sandbox differs by (its id, hostname,
machine-id, entropy and clock) are not in the argv; the identity op sets them after the load.

Costs and limits:
- A template holds its RAM file on tmpfs (``root``): up to its whole memory size. The sum is
  kept under ``budget_bytes``, under the tmpfs' free space and under the host's available memory
  (less ``MIN_FREE_MEMORY_MIB``) by evicting the least recently used templates first (a pool
  is not refilled either while that much memory is not available); one being
  restored from right now is never evicted. Eviction kills the template's pool entries and
  unlinks its files. Live clones keep their private mapping of the unlinked file; its pages
  are freed when the last clone exits.
- A pool entry holds no vCPU or memory reservation, but it is a running, idle guest: real
  memory (PSS ~48 MiB under TCG, mostly QEMU's translation cache) and a little CPU.
- Nothing persists across restarts. ``root`` is this object's own folder, named
  ``<prefix>-<pid>-<random>``; ``start`` removes the folders of the same prefix whose process
  is gone (their clones and pool QEMUs died with it through PR_SET_PDEATHSIG) and ``aclose``
  removes ``root``.
  ``root`` is made by the first build, so a hostd that never creates leaves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from isorun_hostd.agent_channel import ExecRequest
from isorun_hostd.images import ImageDisk
from isorun_hostd.vm import BootFiles, BootTimeout, HostCapabilities, MicroVM, VMSpec
from isorun_hostd.vm.cmdline import BOOT_HOSTNAME
from isorun_hostd.vm.identity import fresh_identity
from isorun_hostd.vm.machine import SlotSource
from isorun_hostd.vm.state import VMState

log = logging.getLogger(__name__)

# A clone's agent answers within milliseconds of the load; a guest that is silent this long is
# broken, and the caller is better off with the next way of getting a VM.
CLONE_TIMEOUT_S = 15.0
# A take refills its pool this long after, once the create and its first exec are done.
REFILL_DELAY_S = 0.25
# Host memory a template build must leave available, on top of the template itself.
MIN_FREE_MEMORY_MIB = 512
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class TemplateKey:
    """What a template's saved RAM and device state depend on; ``name`` names its folder."""

    chain_id: str
    disk: str
    vcpus: int
    mem_mib: int
    kernel: str
    initramfs: str
    accel: str
    qemu_version: str

    @property
    def name(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return f"tpl-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@dataclass
class Template:
    """A built template: its RAM file and device state, and its pool: clones restored and
    warmed up, waiting for a create to give them an identity."""

    key: TemplateKey
    folder: Path
    size_bytes: int
    last_used: float = field(default_factory=time.monotonic)
    # Restores loading from this template right now; it is not evicted while any runs.
    restoring: int = 0
    pool: list[MicroVM] = field(default_factory=list)
    # Pool entries being started, loaded and warmed up, and the task doing it for each.
    spawning: dict[MicroVM, asyncio.Task[None]] = field(default_factory=dict)
    evicted: bool = False

    @property
    def mem(self) -> Path:
        return self.folder / "mem"

    @property
    def device_state(self) -> Path:
        return self.folder / "dev"


@dataclass
class TemplateStats:
    """Counters for tests and benchmarks: where each clone's VM came from."""

    builds: int = 0
    build_failures: int = 0
    pooled: int = 0
    spawned: int = 0
    failed_restores: int = 0
    evictions: int = 0


class Templates:
    """The templates of one hostd, in ``root`` (a tmpfs folder of its own), and their pools.

    Example:
        templates = Templates(root, caps, boot, run_dir, pool_size=1, budget_bytes=4 << 30)
        templates.start()
        vm = await templates.clone(templates.key(disk, 1, 256), hostname="sb-1")
        ...  # vm is None: boot cold
        await templates.aclose()
    """

    def __init__(
        self,
        root: Path,
        caps: HostCapabilities,
        boot: BootFiles,
        run_dir: Path,
        *,
        pool_size: int,
        budget_bytes: int,
        boot_timeout_s: float,
        network: SlotSource | None = None,
    ) -> None:
        self.root = root
        self.network = network
        self.caps = caps
        self.boot = boot
        self.run_dir = run_dir
        self.pool_size = pool_size
        self.budget_bytes = budget_bytes
        self.boot_timeout_s = boot_timeout_s
        self.stats = TemplateStats()
        self._templates: dict[TemplateKey, Template] = {}
        # One build per key at a time (the second create waits for the first one's build).
        self._building: dict[TemplateKey, asyncio.Task[Template | None]] = {}
        self._build_vms: set[MicroVM] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Remove the template folders that hostds of the same state left when they died."""
        prefix = self.root.name.split("-")[0]
        for folder in self.root.parent.glob(f"{prefix}-*") if self.root.parent.is_dir() else ():
            pid = folder.name.split("-")[1]
            if not (pid.isdigit() and _alive(int(pid))):
                shutil.rmtree(folder, ignore_errors=True)
                log.warning("removed %s, the templates of a hostd that is gone", folder)

    async def aclose(self) -> None:
        """Stop builds and refills, kill every pool QEMU and remove ``root``."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        # A pool entry being prepared is let finish (~0.5 s): it then sees _closed and quits.
        spawns = [t for template in self._templates.values() for t in template.spawning.values()]
        await asyncio.gather(*spawns, return_exceptions=True)
        builds = list(self._building.values())
        for task in builds:
            task.cancel()
        await asyncio.gather(*builds, return_exceptions=True)
        vms = [*self._build_vms, *self.pool_vms()]
        await asyncio.gather(*(vm.destroy() for vm in vms), return_exceptions=True)
        self._templates.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def pool_vms(self) -> list[MicroVM]:
        """Every VM this object holds: pool entries, waiting or starting, and template builds."""
        vms = list(self._build_vms)
        for template in self._templates.values():
            vms += [*template.pool, *template.spawning]
        return vms

    @property
    def templates(self) -> list[Template]:
        return list(self._templates.values())

    def key(self, image: ImageDisk, vcpus: int, mem_mib: int) -> TemplateKey:
        return TemplateKey(
            chain_id=image.chain_id,
            disk=str(image.disk_path),
            vcpus=vcpus,
            mem_mib=mem_mib,
            kernel=str(self.boot.kernel),
            initramfs=str(self.boot.initramfs),
            accel=self.caps.accel,
            qemu_version=self.caps.qemu_version,
        )

    # -- clones ------------------------------------------------------------------------------

    async def clone(self, key: TemplateKey, *, sandbox_id: str, hostname: str) -> MicroVM | None:
        """A running VM restored from the template of ``key`` (built first if missing), whose
        agent has answered the identity op that gave it ``hostname``; None if none could be had
        (the caller boots cold).

        Raises:
            BootTimeout: building the template timed out: a cold boot would too.
        """
        template = await self._template(key)
        if template is None:
            return None
        template.last_used = time.monotonic()
        template.restoring += 1
        try:
            while template.pool:
                vm = template.pool.pop(0)
                if not vm.alive:
                    log.warning("pool VM %s of %s is gone; skipped", vm.spec.vm_id, key.name)
                    await vm.destroy()
                    continue
                if await self._restore(template, vm, hostname):
                    self.stats.pooled += 1
                    return vm
            vm = self._vm(self._clone_spec(template, sandbox_id))
            if await self._restore(template, vm, hostname):
                self.stats.spawned += 1
                return vm
            return None
        finally:
            template.restoring -= 1
            # After the create has answered and its first exec has run, not during them: a
            # starting QEMU would compete for the CPUs (and its spawn for the event loop).
            self._refill_later(template)

    async def _restore(self, template: Template, vm: MicroVM, hostname: str) -> bool:
        """Load ``vm`` unless it is a pool entry (loaded already), then give it its identity:
        the round trip proves its agent answers. False, with ``vm`` destroyed, on failure."""
        try:
            # A pool entry's warm-up gave it a machine-id of its own already.
            warmed = vm.state.state is VMState.RUNNING
            if not warmed:
                await vm.start(
                    timeout_s=CLONE_TIMEOUT_S, restore=template.device_state, ignore_shared=True
                )
            identity = fresh_identity(hostname, machine_id=not warmed)
            await asyncio.wait_for(vm.channel.identity(identity), CLONE_TIMEOUT_S)
        except BaseException as exc:
            await vm.destroy()
            if not isinstance(exc, Exception):
                raise
            self.stats.failed_restores += 1
            log.warning(
                "restore of %s from %s failed, trying the next way: %s",
                vm.spec.vm_id,
                template.key.name,
                exc,
            )
            return False
        return True

    def _clone_spec(self, template: Template, vm_id: str) -> VMSpec:
        key = template.key
        return VMSpec(
            vm_id,
            vcpus=key.vcpus,
            mem_mib=key.mem_mib,
            disk=Path(key.disk),
            mem_path=template.mem,
            nic=self.network is not None,
        )

    def _vm(self, spec: VMSpec) -> MicroVM:
        return MicroVM(spec, self.caps, self.boot, self.run_dir, self.network)

    # -- the warm pool -----------------------------------------------------------------------

    def _refill_later(self, template: Template) -> None:
        def fire() -> None:
            self._timers.discard(timer)
            self._refill(template)

        timer = asyncio.get_running_loop().call_later(REFILL_DELAY_S, fire)
        self._timers.add(timer)

    def _refill(self, template: Template) -> None:
        if self._closed or template.evicted:
            return
        missing = self.pool_size - len(template.pool) - len(template.spawning)
        if (
            missing > 0
            and _available_memory_bytes()
            < (MIN_FREE_MEMORY_MIB + template.key.mem_mib) * MIB * missing
        ):
            # Under memory pressure the pool waits: creates restore into fresh QEMUs meanwhile.
            log.warning("low host memory: the pool of %s is not refilled", template.key.name)
            return
        for _ in range(max(0, missing)):
            vm = self._vm(self._clone_spec(template, f"pool-{secrets.token_hex(6)}"))
            task = asyncio.create_task(self._bg_prepare(template, vm), name=f"pool-{vm.spec.vm_id}")
            template.spawning[vm] = task

    async def _bg_prepare(self, template: Template, vm: MicroVM) -> None:
        try:
            await vm.start(
                timeout_s=CLONE_TIMEOUT_S, restore=template.device_state, ignore_shared=True
            )
            await self._warm_up(vm)
        except Exception as exc:
            log.warning("pool VM for %s did not start: %s", template.key.name, exc)
            await vm.destroy()
            return
        finally:
            if template.evicted or self._closed:
                await vm.destroy()
            template.spawning.pop(vm, None)
        if not (template.evicted or self._closed):
            template.pool.append(vm)

    @staticmethod
    async def _warm_up(vm: MicroVM) -> None:
        """Run the paths a create and its first exec take, so that their guest code is
        translated (TCG) and paged in before the take."""
        await asyncio.wait_for(vm.channel.identity(fresh_identity(BOOT_HOSTNAME)), CLONE_TIMEOUT_S)
        process = await vm.channel.exec(ExecRequest(argv=["true"]))
        await asyncio.wait_for(process.wait(), CLONE_TIMEOUT_S)

    # -- building ----------------------------------------------------------------------------

    async def _template(self, key: TemplateKey) -> Template | None:
        template = self._templates.get(key)
        if template is not None:
            return template
        task = self._building.get(key)
        if task is None:
            task = asyncio.create_task(self._build(key), name=f"build-{key.name}")
            self._building[key] = task
            task.add_done_callback(lambda _: self._building.pop(key, None))
        # A cancelled create leaves the build to finish for the next one.
        return await asyncio.shield(task)

    async def _build(self, key: TemplateKey) -> Template | None:
        need = key.mem_mib * MIB
        partial = self.root / f"{key.name}.partial"
        final = self.root / key.name
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not await self._make_room(need):
                log.warning("no room for a %d MiB template; booting cold", key.mem_mib)
                return None
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(mode=0o700)
        except OSError as exc:
            log.warning("template folder %s is not usable (%s); booting cold", self.root, exc)
            return None
        spec = VMSpec(
            f"tpl-{secrets.token_hex(6)}",
            vcpus=key.vcpus,
            mem_mib=key.mem_mib,
            disk=Path(key.disk),
            mem_path=partial / "mem",
            mem_shared=True,
            nic=self.network is not None,
        )
        vm = self._vm(spec)
        self._build_vms.add(vm)
        started = time.perf_counter()
        try:
            await vm.start(timeout_s=self.boot_timeout_s)
            await vm.save_template(partial / "dev")
            await vm.destroy()
            partial.rename(final)
        except BootTimeout:
            self.stats.build_failures += 1
            shutil.rmtree(partial, ignore_errors=True)
            raise
        except Exception as exc:
            self.stats.build_failures += 1
            log.warning("template %s failed, booting cold: %s", key.name, exc)
            shutil.rmtree(partial, ignore_errors=True)
            return None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            await vm.destroy()
            self._build_vms.discard(vm)
        template = Template(key, final, size_bytes=_allocated(final))
        self._templates[key] = template
        self.stats.builds += 1
        log.info(
            "template %s built in %.0f ms (%d MiB on tmpfs)",
            key.name,
            (time.perf_counter() - started) * 1000,
            template.size_bytes // MIB,
        )
        self._refill(template)
        return template

    # -- eviction ----------------------------------------------------------------------------

    async def _make_room(self, need_bytes: int) -> bool:
        """Evict least recently used templates until ``need_bytes`` more fit; False if they
        cannot (the budget is smaller, or the rest is in use)."""
        if need_bytes > self.budget_bytes:
            return False
        while not self._fits(need_bytes):
            idle = [t for t in self._templates.values() if t.restoring == 0]
            if not idle:
                return False
            await self.evict(min(idle, key=lambda t: t.last_used))
        return True

    def _fits(self, need_bytes: int) -> bool:
        used = sum(t.size_bytes for t in self._templates.values())
        free = shutil.disk_usage(self.root).free
        available = _available_memory_bytes() - MIN_FREE_MEMORY_MIB * MIB
        return used + need_bytes <= self.budget_bytes and need_bytes <= min(free, available)

    async def evict(self, template: Template) -> None:
        """Forget ``template``: kill its pool entries and remove its files (live clones keep
        their private mapping)."""
        template.evicted = True
        self._templates.pop(template.key, None)
        # Entries being prepared are let finish (~0.5 s): they then see ``evicted`` and quit.
        await asyncio.gather(*template.spawning.values(), return_exceptions=True)
        pool = list(template.pool)
        template.pool.clear()
        await asyncio.gather(*(vm.destroy() for vm in pool), return_exceptions=True)
        shutil.rmtree(template.folder, ignore_errors=True)
        self.stats.evictions += 1
        log.info("template %s evicted", template.key.name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _allocated(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.iterdir())


def _available_memory_bytes() -> int:
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62
