"""Fork, snapshot, hibernate and resume of real microVMs (python fixture image), at hostd level.

What issue 5 asks of them: clones are distinct (entropy, uuid4, hostname, machine-id) and
independent (files diverge), processes started before a fork run in every clone, a hibernated
sandbox comes back after a hostd restart with its process and files, and failures are clear
errors that leave the source unharmed and nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from isorun_hostd.config import Settings
from isorun_hostd.sandboxes import Runtime, Sandbox
from isorun_hostd.snapshots import SnapshotNotFound
from isorun_hostd.vm.errors import SnapshotError, StateError
from isorun_hostd.vm.machine import MicroVM

from tests.framework.run import run

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]

# A background loop that appends a line every 0.2 s: proof that a process survived.
HEARTBEAT = "nohup sh -c 'while :; do echo beat >> /tmp/beats; sleep 0.2; done' >/dev/null 2>&1 &"


async def text(sandbox: Sandbox, command: str) -> str:
    result = await run(sandbox, command)
    assert result.end.exit_code == 0, result.stderr
    return result.stdout.decode()


async def beats(sandbox: Sandbox) -> int:
    return int(await text(sandbox, "wc -l < /tmp/beats"))


async def still_beating(sandbox: Sandbox) -> bool:
    before = await beats(sandbox)
    await asyncio.sleep(1.5)
    return await beats(sandbox) > before


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def source(runtime: Runtime, python_ref: str) -> AsyncIterator[Sandbox]:
    sb = await runtime.create(python_ref)
    await text(sb, f"echo from-source > /tmp/shared.txt; {HEARTBEAT}")
    yield sb
    await runtime.destroy(sb)


async def test_two_forks_are_distinct_independent_and_keep_processes(
    runtime: Runtime, source: Sandbox
) -> None:
    clones = await runtime.fork(source, 2)
    try:
        everyone = [source, *clones]
        assert len({sb.id for sb in everyone}) == 3
        for sb in everyone:
            assert await text(sb, "cat /tmp/shared.txt") == "from-source\n"
            assert await still_beating(sb), f"{sb.id}: the pre-fork process is not running"

        draws = [await text(sb, "head -c 32 /dev/urandom | od -An -tx1") for sb in everyone]
        uuids = [await text(sb, "python3 -c 'import uuid; print(uuid.uuid4())'") for sb in everyone]
        assert len(set(draws)) == 3
        assert len(set(uuids)) == 3
        for clone in clones:
            assert (await text(clone, "hostname")).strip() == clone.id
            assert (await text(clone, "printenv HOSTNAME")).strip() == clone.id
        machine_ids = {await text(sb, "cat /etc/machine-id") for sb in clones}
        assert len(machine_ids) == 2

        for i, sb in enumerate(everyone):
            await text(sb, f"echo mine > /tmp/only-{i}")
        for i, sb in enumerate(everyone):
            listing = (await text(sb, "ls /tmp")).split()
            assert [name for name in listing if name.startswith("only-")] == [f"only-{i}"]
    finally:
        for clone in clones:
            await runtime.destroy(clone)
    assert await emptied(runtime._fork_streams.root)


async def emptied(folder: Path, timeout_s: float = 10.0) -> bool:
    """Whether ``folder`` is empty within ``timeout_s``: a fork stream is removed in the
    background once its clones are up."""
    deadline = time.monotonic() + timeout_s
    while any(folder.iterdir()):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_named_snapshot_restores_as_many_sandboxes_as_asked(
    runtime: Runtime, source: Sandbox
) -> None:
    await text(source, "echo at-snapshot > /tmp/version")
    meta = await runtime.snapshot(source)
    await text(source, "echo after-snapshot > /tmp/version")
    assert meta.size_bytes > 0
    assert [m.snapshot_id for m in runtime.snapshots.all()] == [meta.snapshot_id]
    first = await runtime.from_snapshot(meta.snapshot_id)
    second = await runtime.from_snapshot(meta.snapshot_id)
    try:
        for sb in (first, second):
            assert await text(sb, "cat /tmp/version") == "at-snapshot\n"
        assert await text(source, "cat /tmp/version") == "after-snapshot\n"
    finally:
        await runtime.destroy(first)
        await runtime.destroy(second)
        runtime.snapshots.delete(meta.snapshot_id)
    with pytest.raises(SnapshotNotFound):
        await runtime.from_snapshot(meta.snapshot_id)


async def test_restore_of_a_corrupt_or_missing_state_is_a_clear_error(
    runtime: Runtime, source: Sandbox
) -> None:
    meta = await runtime.snapshot(source)
    state = runtime.snapshots.state_path(meta.snapshot_id)
    try:
        with state.open("r+b") as f:
            f.seek(state.stat().st_size // 2)
            f.write(b"\xff" * 4096)
            f.truncate(state.stat().st_size * 3 // 4)
        with pytest.raises(SnapshotError, match="corrupt, truncated"):
            await runtime.from_snapshot(meta.snapshot_id)
        state.unlink()
        with pytest.raises(SnapshotError, match="missing"):
            await runtime.from_snapshot(meta.snapshot_id)
    finally:
        runtime.snapshots.delete(meta.snapshot_id)
    assert len(runtime.sandboxes) == 1
    assert await text(source, "cat /tmp/shared.txt") == "from-source\n"


async def test_fork_of_a_gone_sandbox_is_refused(runtime: Runtime, python_ref: str) -> None:
    doomed = await runtime.create(python_ref)
    assert doomed.vm.pid is not None
    await runtime.destroy(doomed)
    with pytest.raises(StateError, match="stopped"):
        await runtime.fork(doomed, 1)
    assert not list(runtime._fork_streams.root.iterdir())


async def test_fork_of_a_crashed_sandbox_is_a_clear_error(
    runtime: Runtime, python_ref: str
) -> None:
    crashed = await runtime.create(python_ref)
    assert crashed.vm.pid is not None
    os.kill(crashed.vm.pid, signal.SIGKILL)
    try:
        with pytest.raises(SnapshotError, match="save failed"):
            await runtime.fork(crashed, 2)
        with pytest.raises(SnapshotError, match="save failed"):
            await runtime.hibernate(crashed)
        assert runtime.hibernations.all() == []
        assert not list(runtime._fork_streams.root.iterdir())
    finally:
        await runtime.destroy(crashed)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: too small for any VM's state."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


async def test_save_to_a_full_disk_fails_cleanly_and_the_source_runs_on(
    runtime: Runtime, source: Sandbox, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.snapshots, "root", tiny_disk)
    with pytest.raises(SnapshotError, match="save failed"):
        await runtime.snapshot(source)
    assert list(tiny_disk.iterdir()) == []
    assert await still_beating(source)
    assert await text(source, "cat /tmp/shared.txt") == "from-source\n"


async def test_hibernated_sandbox_resumes_after_a_hostd_restart(
    runtime: Runtime, settings: Settings, python_ref: str, tmp_path: Path
) -> None:
    sb = await runtime.create(python_ref)
    await text(sb, f"echo kept > /tmp/file.txt; {HEARTBEAT}")
    machine_id = await text(sb, "cat /etc/machine-id")
    meta = await runtime.hibernate(sb)
    assert runtime.get(sb.id) is None
    assert meta.kind == "hibernation"
    assert [m.snapshot_id for m in runtime.hibernations.all()] == [sb.id]

    # Asleep long enough that a guest clock left where it stopped would be seconds behind.
    await asyncio.sleep(2)
    # A second hostd on the same state dir, as after a restart.
    restarted = Runtime(settings.model_copy(update={"run_dir": tmp_path / "run"}))
    await restarted.start()
    try:
        resumed = await restarted.resume(sb.id)
        assert resumed.id == sb.id
        assert await text(resumed, "cat /tmp/file.txt") == "kept\n"
        assert await still_beating(resumed)
        assert (await text(resumed, "hostname")).strip() == sb.id
        # The machine that hibernated, not a copy of it: it keeps its machine-id.
        assert await text(resumed, "cat /etc/machine-id") == machine_id
        guest_now = float(await text(resumed, "date +%s.%N"))
        assert abs(guest_now - time.time()) < 1.0
        assert restarted.hibernations.all() == []
    finally:
        await restarted.aclose()
    with pytest.raises(SnapshotNotFound):
        await runtime.resume(sb.id)


async def waiting_targets(runtime: Runtime, count: int, timeout_s: float = 10.0) -> list[MicroVM]:
    """The restore targets waiting in ``runtime``'s pool, once there are ``count``."""
    assert runtime.incoming is not None
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        vms = [vm for vm in runtime.incoming.vms() if vm.waiting]
        if len(vms) >= count or asyncio.get_running_loop().time() > deadline:
            return vms
        await asyncio.sleep(0.02)


async def test_resume_and_fork_load_into_waiting_qemus(runtime: Runtime, python_ref: str) -> None:
    assert runtime.incoming is not None and runtime.settings.restore_pool_size == 1
    sb = await runtime.create(python_ref)
    await text(sb, "echo kept > /tmp/file.txt")
    await runtime.hibernate(sb)
    # The hibernate starts a restore target of its shape: the resume loads straight into it.
    (target,) = await waiting_targets(runtime, 1)
    taken = runtime.incoming.taken
    resumed = await runtime.resume(sb.id)
    try:
        assert resumed.vm is target and runtime.incoming.taken == taken + 1
        assert resumed.vm.spans_ms["launch"] < 5
        assert await text(resumed, "cat /tmp/file.txt") == "kept\n"
        assert (await text(resumed, "hostname")).strip() == sb.id
        # Refilled after the restore; a fork of 3 takes that one and starts two more.
        (target,) = await waiting_targets(runtime, 1)
        clones = await runtime.fork(resumed, 3)
        assert target in [c.vm for c in clones]
        assert len({(await text(c, "hostname")).strip() for c in clones}) == 3
        await asyncio.gather(*(runtime.destroy(c) for c in clones))
    finally:
        await runtime.destroy(resumed)
    assert len(await waiting_targets(runtime, 1)) == 1


async def test_restore_pool_size_zero_keeps_no_waiting_qemu(
    settings: Settings, python_ref: str, tmp_path: Path
) -> None:
    off = Runtime(
        settings.model_copy(
            update={"run_dir": tmp_path / "run", "restore_pool_size": 0, "templates": False}
        )
    )
    await off.start()
    try:
        sb = await off.create(python_ref)
        await off.hibernate(sb)
        assert off.pool_vms() == []
        resumed = await off.resume(sb.id)
        (clone,) = await off.fork(resumed, 1)
        assert await text(clone, "hostname") == f"{clone.id}\n"
        await asyncio.sleep(0.7)  # past a refill's delay
        assert off.pool_vms() == []
    finally:
        await off.aclose()
    assert not list((tmp_path / "run").iterdir())
