"""Pre-started restore targets: QEMUs launched with ``-S -incoming defer`` that wait, per VM
shape, for a state stream, so that a resume, fork or restore from a snapshot skips QEMU's start.

```
take(shape) ─► a waiting QEMU of that shape, alive? ──no──► one being launched (``wait``)?
  │ yes: a MicroVM in INCOMING;                                  yes: wait for it, take it
  │ the caller's start(restore=F) loads F into it at once        no: None, the caller
  ▼                                                                  launches its own
refill(shape) ─► up to ``size`` entries per shape: MicroVM.launch_incoming() ─► QEMU -S
                 -incoming defer, memory-backend-ram, QMP up ─► INCOMING, waits in the pool
                 (the runtime calls it after each save, so that the resume, fork or
                 from_snapshot that follows finds one, and REFILL_DELAY_S after each
                 restore: a QEMU starting at once would compete for the CPUs with the
                 restored guest's first exec)
aclose() ─► wait for launches ─► kill every waiting QEMU
```
An entry runs the exact argv of a stream restore of that shape (vCPUs, memory, image disk; the
boot files and accelerator are the runtime's), named ``pool-rs-<random>`` rather than for a
sandbox: nothing in the argv names one (cmdline.py). It holds no vCPU or memory reservation,
runs no guest (``-S``) and costs a QEMU's start-up RSS (~40-50 MiB). At most ``MAX_SHAPES``
shapes keep entries; priming another one kills the least recently used shape's. Under TCG the
start skipped is ~40 ms on an idle host and 100-180 ms while other guests run (a fork of 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from pathlib import Path

from isorun_hostd.vm.bootfiles import BootFiles
from isorun_hostd.vm.capabilities import HostCapabilities
from isorun_hostd.vm.cmdline import VMSpec
from isorun_hostd.vm.machine import MicroVM, SlotSource

log = logging.getLogger(__name__)

MAX_SHAPES = 4
REFILL_DELAY_S = 0.5
# Host memory a refill must leave available.
MIN_FREE_MEMORY_MIB = 512

Shape = tuple[int, int, Path | None]
"""(vCPUs, memory MiB, image disk): what a restore target's argv depends on."""


def shape_of(spec: VMSpec) -> Shape:
    return (spec.vcpus, spec.mem_mib, spec.disk)


class IncomingPool:
    """Waiting restore targets, ``size`` per shape; ``size`` 0 keeps none.

    Example:
        pool = IncomingPool(caps, boot, run_dir, size=1)
        vm = await pool.take(shape) or MicroVM(spec, caps, boot, run_dir)
        await vm.start(timeout_s=60, restore=state_file)
        await pool.aclose()
    """

    def __init__(
        self,
        caps: HostCapabilities,
        boot: BootFiles,
        run_dir: Path,
        *,
        size: int,
        network: SlotSource | None = None,
    ):
        self.caps = caps
        self.network = network
        self.boot = boot
        self.run_dir = run_dir
        self.size = size
        # Least recently used shape first.
        self._waiting: OrderedDict[Shape, list[MicroVM]] = OrderedDict()
        self._launching: dict[MicroVM, asyncio.Task[None]] = {}
        self._destroying: dict[MicroVM, asyncio.Task[None]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False
        self.taken = 0

    def vms(self) -> list[MicroVM]:
        """Every QEMU this pool holds: waiting, being launched or being killed."""
        waiting = [vm for vms in self._waiting.values() for vm in vms]
        return [*waiting, *self._launching, *self._destroying]

    async def take(self, shape: Shape, *, wait: bool = True) -> MicroVM | None:
        """A waiting QEMU of ``shape``, now the caller's to start or destroy. With ``wait``,
        one being launched is waited for (it is ahead of a new one: a resume right after its
        hibernate)."""
        vm = self._pop(shape)
        if vm is None and wait:
            launching = [t for v, t in self._launching.items() if shape_of(v.spec) == shape]
            if launching:
                await asyncio.wait([launching[0]])
                vm = self._pop(shape)
        if vm is not None:
            self.taken += 1
        return vm

    def _pop(self, shape: Shape) -> MicroVM | None:
        vms = self._waiting.get(shape, [])
        while vms:
            vm = vms.pop(0)
            if vm.waiting:
                return vm
            log.warning("restore target %s is gone; skipped", vm.spec.vm_id)
            self._spawn_destroy(vm)
        return None

    def refill_later(self, shape: Shape) -> None:
        """``refill(shape)`` after ``REFILL_DELAY_S``."""
        if self._closed or self.size == 0:
            return

        def fire() -> None:
            self._timers.discard(timer)
            self.refill(shape)

        timer = asyncio.get_running_loop().call_later(REFILL_DELAY_S, fire)
        self._timers.add(timer)

    def refill(self, shape: Shape) -> None:
        """Launch entries of ``shape`` in the background until it has ``size``."""
        if self._closed or self.size == 0:
            return
        self._waiting.setdefault(shape, [])
        self._waiting.move_to_end(shape)
        while len(self._waiting) > MAX_SHAPES:
            _, old = self._waiting.popitem(last=False)
            for vm in old:
                self._spawn_destroy(vm)
        launching = sum(shape_of(vm.spec) == shape for vm in self._launching)
        missing = self.size - len(self._waiting[shape]) - launching
        if missing > 0 and _available_memory_mib() < MIN_FREE_MEMORY_MIB + 64 * missing:
            log.warning("low host memory: no restore target is started ahead")
            return
        for _ in range(missing):
            vcpus, mem_mib, disk = shape
            spec = VMSpec(
                f"pool-rs-{secrets.token_hex(6)}",
                vcpus=vcpus,
                mem_mib=mem_mib,
                disk=disk,
                nic=self.network is not None,
            )
            vm = MicroVM(spec, self.caps, self.boot, self.run_dir, self.network)
            self._launching[vm] = asyncio.create_task(self._launch(vm), name=spec.vm_id)

    async def _launch(self, vm: MicroVM) -> None:
        # The VM stays in _launching until it is either waiting or gone.
        try:
            await vm.launch_incoming()
            shape = shape_of(vm.spec)
            if self._closed or shape not in self._waiting:
                await vm.destroy()
            else:
                self._waiting[shape].append(vm)
        except Exception as exc:
            log.warning("restore target %s did not start: %s", vm.spec.vm_id, exc)
        finally:
            self._launching.pop(vm, None)

    def _spawn_destroy(self, vm: MicroVM) -> None:
        task = asyncio.create_task(vm.destroy(), name=f"destroy-{vm.spec.vm_id}")
        self._destroying[vm] = task
        task.add_done_callback(lambda _: self._destroying.pop(vm, None))

    async def aclose(self) -> None:
        """Kill every waiting QEMU, after letting launches finish (~40 ms each)."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        tasks = [*self._launching.values(), *self._destroying.values()]
        await asyncio.gather(*tasks, return_exceptions=True)
        vms = [vm for vms in self._waiting.values() for vm in vms]
        self._waiting.clear()
        await asyncio.gather(*(vm.destroy() for vm in vms), return_exceptions=True)


def _available_memory_mib() -> int:
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 1 << 40
