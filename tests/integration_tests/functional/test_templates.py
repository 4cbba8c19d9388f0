"""Templates and the warm pool (issue 5, scope item 1) with real microVMs, at hostd level.

A create after the first of its shape takes a clone of the template from the warm pool (loaded
and warmed up beforehand) or restores one into a fresh QEMU; clones are distinct guests; the
pool refills and skips a dead entry; templates are evicted under a tight budget while their
clones run on; the boot files are part of the key; with templates off, creates boot cold;
aclose leaves no QEMU and no tmpfs file. Timings and memory are printed (``-s``), never
asserted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from isorun_hostd.config import Settings
from isorun_hostd.sandboxes import Runtime, Sandbox
from isorun_hostd.templates import TemplateStats
from isorun_hostd.vm.errors import SnapshotError
from isorun_hostd.vm.machine import MicroVM

from tests.framework.run import run
from tests.host_tools.leaks import qemu_pids

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]

MIB = 1 << 20


async def text(sandbox: Sandbox, command: str) -> str:
    result = await run(sandbox, command)
    assert result.end.exit_code == 0, result.stderr
    return result.stdout.decode()


def stats(runtime: Runtime) -> TemplateStats:
    assert runtime.templates is not None
    return dataclasses.replace(runtime.templates.stats)


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no Pss line")


async def pool_of(
    runtime: Runtime, sandbox: Sandbox, size: int, timeout_s: float = 20.0
) -> list[MicroVM]:
    """The live pool entries of ``sandbox``'s template, once there are ``size``."""
    assert runtime.templates is not None
    key = runtime.templates.key(sandbox.image, sandbox.vm.spec.vcpus, sandbox.vm.spec.mem_mib)
    deadline = time.monotonic() + timeout_s
    while True:
        pools = [t.pool for t in runtime.templates.templates if t.key == key]
        alive = [vm for pool in pools for vm in pool if vm.alive]
        if len(alive) >= size or time.monotonic() > deadline:
            return alive
        await asyncio.sleep(0.05)


async def test_later_creates_restore_the_template_as_distinct_guests(
    runtime: Runtime, python_ref: str
) -> None:
    first = await runtime.create(python_ref)  # builds the template, unless an earlier test did
    sandboxes = [first]
    try:
        await pool_of(runtime, first, 1)
        before = stats(runtime)
        cold = runtime.cold_boots
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            sb = await runtime.create(python_ref)
            sandboxes.append(sb)
            created = time.perf_counter()
            assert await text(sb, "echo ready") == "ready\n"
            done = time.perf_counter()
            timings.append(((created - started) * 1000, (done - started) * 1000))
            await pool_of(runtime, first, 1)
        after = stats(runtime)
        assert after.builds == before.builds
        assert after.pooled + after.spawned == before.pooled + before.spawned + 2
        assert after.pooled >= before.pooled + 1
        assert runtime.cold_boots == cold

        clones = sandboxes[1:]
        for sb in sandboxes:
            assert (await text(sb, "hostname")).strip() == sb.id
            assert (await text(sb, "printenv HOSTNAME")).strip() == sb.id
        draws = {await text(sb, "head -c 32 /dev/urandom | od -An -tx1") for sb in sandboxes}
        uuid4 = "python3 -c 'import uuid; print(uuid.uuid4())'"
        uuids = {await text(sb, uuid4) for sb in sandboxes}
        machine_ids = {await text(sb, "cat /etc/machine-id") for sb in sandboxes}
        assert len(draws) == len(uuids) == len(machine_ids) == 3
        await text(clones[0], "echo mine > /tmp/only-here")
        assert "only-here" not in await text(clones[1], "ls /tmp")

        await asyncio.sleep(1)
        pss = [pss_mib(sb.vm.pid) for sb in clones if sb.vm.pid]
        print(
            "\ncreate from template (ms): "
            + ", ".join(f"create {c:.0f} / first exec done {e:.0f}" for c, e in timings)
            + f"; idle clone PSS (MiB): {', '.join(f'{p:.1f}' for p in pss)}"
        )
    finally:
        for sb in sandboxes:
            await runtime.destroy(sb)


async def test_pool_refills_and_a_killed_pool_qemu_is_skipped(
    runtime: Runtime, python_ref: str
) -> None:
    first = await runtime.create(python_ref)  # the template exists
    await runtime.destroy(first)
    (entry,) = await pool_of(runtime, first, 1)
    assert entry.pid is not None
    os.kill(entry.pid, signal.SIGKILL)
    before = stats(runtime)
    sb = await runtime.create(python_ref)
    try:
        assert await text(sb, "echo alive") == "alive\n"
        assert sb.vm is not entry
        after = stats(runtime)
        assert after.pooled == before.pooled
        assert after.spawned == before.spawned + 1
        refilled = await pool_of(runtime, first, 1)
        assert refilled and entry not in refilled
    finally:
        await runtime.destroy(sb)


async def test_new_boot_files_get_a_new_template(
    runtime: Runtime, python_ref: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template saved by another agent (or kernel) is never restored."""
    assert runtime.templates is not None
    await runtime.destroy(await runtime.create(python_ref))
    boot = runtime.boot
    # Same bytes under another content-hash name: what a rebuilt agent looks like to hostd.
    newer = boot.initramfs.with_name("initramfs-0000000000000000.cpio")
    shutil.copyfile(boot.initramfs, newer)
    newer_boot = dataclasses.replace(boot, initramfs=newer)
    monkeypatch.setattr(runtime, "_boot", newer_boot)
    monkeypatch.setattr(runtime.templates, "boot", newer_boot)
    before = stats(runtime)
    sb = await runtime.create(python_ref)
    try:
        assert stats(runtime).builds == before.builds + 1
        keys = {t.key for t in runtime.templates.templates}
        assert {k.initramfs for k in keys} == {str(boot.initramfs), str(newer)}
        assert (await text(sb, "hostname")).strip() == sb.id
    finally:
        await runtime.destroy(sb)
        for template in runtime.templates.templates:
            if template.key.initramfs == str(newer):
                await runtime.templates.evict(template)
        newer.unlink()


@pytest_asyncio.fixture(loop_scope="session")
async def tight(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Runtime]:
    """A runtime of its own whose template budget holds one 256 MiB template, not two."""
    run_dir = tmp_path_factory.mktemp("tr")
    rt = Runtime(
        settings.model_copy(
            update={"run_dir": run_dir, "template_budget_bytes": 256 * MIB, "template_pool_size": 1}
        )
    )
    await rt.start()
    try:
        yield rt
    finally:
        await rt.aclose()
        assert not qemu_pids(run_dir)
        assert not list(run_dir.iterdir())
        assert not list(settings.template_dir.glob(f"{rt.settings.templates_prefix}-*"))


async def test_racing_creates_build_once_and_eviction_spares_live_clones(
    tight: Runtime, python_ref: str
) -> None:
    a, b = await asyncio.gather(tight.create(python_ref), tight.create(python_ref))
    extra: list[Sandbox] = []
    try:
        assert stats(tight).builds == 1
        assert tight.cold_boots == 0
        assert tight.templates is not None
        (first,) = tight.templates.templates
        assert first.mem.is_file()
        print(f"\ntemplate of 256 MiB: {first.size_bytes / MIB:.0f} MiB on tmpfs")

        # A second shape does not fit beside the first: the first is evicted, its clones run on.
        other = await tight.create(python_ref, mem_mib=200)
        extra.append(other)
        assert stats(tight).evictions == 1
        assert not first.folder.exists()
        assert [t.key.mem_mib for t in tight.templates.templates] == [200]
        for sb in (a, b):
            # Touch memory the clone never wrote: it is read from the unlinked file.
            out = await text(sb, "python3 -c 'b = bytearray(64 << 20); print(len(b))'")
            assert out == f"{64 << 20}\n"
            assert (await text(sb, "hostname")).strip() == sb.id

        # A shape larger than the whole budget gets no template: a cold boot.
        big = await tight.create(python_ref, mem_mib=512)
        extra.append(big)
        assert tight.cold_boots == 1
        assert (await text(big, "hostname")).strip() == big.id
    finally:
        for sb in (a, b, *extra):
            await tight.destroy(sb)


async def test_failed_template_build_leaves_nothing_and_boots_cold(
    tight: Runtime, python_ref: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: MicroVM, state_file: Path) -> int:
        state_file.write_bytes(b"half")
        raise SnapshotError(f"VM {self.spec.vm_id}: template save failed: injected")

    monkeypatch.setattr(MicroVM, "save_template", broken)
    sb = await tight.create(python_ref)
    try:
        assert tight.templates is not None
        assert stats(tight).build_failures == 1
        assert tight.cold_boots == 1
        assert list(tight.templates.root.iterdir()) == []
        assert tight.pool_vms() == []
        assert (await text(sb, "hostname")).strip() == sb.id
    finally:
        await tight.destroy(sb)


async def test_templates_off_boots_cold(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, python_ref: str
) -> None:
    run_dir = tmp_path_factory.mktemp("tr")
    rt = Runtime(settings.model_copy(update={"run_dir": run_dir, "templates": False}))
    await rt.start()
    try:
        sb = await rt.create(python_ref)
        assert rt.templates is None
        assert rt.cold_boots == 1
        assert (await text(sb, "hostname")).strip() == sb.id
        assert (await text(sb, "printenv HOSTNAME")).strip() == sb.id
    finally:
        await rt.aclose()
    assert not qemu_pids(run_dir)
    assert not list(settings.template_dir.glob(f"{rt.settings.templates_prefix}-*"))
