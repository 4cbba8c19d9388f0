"""The developer CLI, run as a user would: a subprocess with its own environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from isorun_hostd.config import Settings
from isorun_hostd.sandboxes import Runtime
from isorun_hostd.vm.machine import remove_stale_run_dirs

from tests.framework.registry import Registry
from tests.host_tools.leaks import qemu_pids

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "ISORUN_STATE_DIR": str(settings.state_dir),
        "ISORUN_RUN_DIR": str(settings.run_dir),
    }


def _runtime_pids(runtime: Runtime) -> set[int | None]:
    """The session runtime's QEMUs, which share the run folder: sandboxes and pool VMs."""
    return {vm.pid for vm in [*(s.vm for s in runtime.sandboxes), *runtime.pool_vms()]}


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isorun_hostd", *args],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


async def test_run_streams_output_and_exits_with_the_commands_status(
    runtime: Runtime, settings: Settings, python_ref: str
) -> None:
    done = _cli(settings, "run", python_ref, "--", "python3", "-c", "print(2**32)")
    assert (done.returncode, done.stdout) == (0, "4294967296\n"), done.stderr
    failed = _cli(settings, "run", python_ref, "--", "sh", "-c", "echo oops >&2; exit 7")
    assert (failed.returncode, failed.stderr.splitlines()[-1]) == (7, "oops")
    assert not qemu_pids(settings.run_dir) - _runtime_pids(runtime)


async def test_run_reports_isorun_failures_with_125(
    runtime: Runtime, settings: Settings, registry: Registry
) -> None:
    base = registry.ref("busybox:1.0").rpartition(":")[0]
    done = _cli(settings, "run", base, "--", "true")
    assert done.returncode == 125
    assert "no tag" in done.stderr and "Traceback" not in done.stderr


async def test_doctor_names_the_accelerator_and_why(runtime: Runtime, settings: Settings) -> None:
    done = _cli(settings, "doctor")
    assert done.returncode == 0, done.stderr
    line = next(row for row in done.stdout.splitlines() if row.startswith("accelerator"))
    assert runtime.caps.accel.upper() in line and runtime.caps.accel_reason in line


def _start_sleeper(settings: Settings, reference: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "ISORUN_STATE_DIR": str(settings.state_dir),
        "ISORUN_RUN_DIR": str(settings.run_dir),
    }
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "isorun_hostd",
            "run",
            reference,
            "--",
            "sh",
            "-c",
            "echo ready; sleep 300",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert cli.stdout is not None
    assert cli.stdout.readline() == "ready\n"
    return cli


def _wait_gone(pids: set[int], timeout_s: float = 5) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if Path(f"/proc/{p}").exists()}
        time.sleep(0.05)
    return pids


async def test_sigterm_tears_the_vm_down(
    runtime: Runtime, settings: Settings, registry: Registry
) -> None:
    before = set(os.listdir(settings.run_dir))
    cli = _start_sleeper(settings, registry.ref("busybox:1.0"))
    assert len(set(os.listdir(settings.run_dir)) - before) == 1
    cli.send_signal(signal.SIGTERM)
    assert cli.wait(timeout=30) == 128 + signal.SIGTERM
    assert set(os.listdir(settings.run_dir)) == before
    assert not qemu_pids(settings.run_dir) - _runtime_pids(runtime)


async def test_killed_hostd_takes_qemu_along_and_leftovers_are_removed(
    runtime: Runtime, settings: Settings, registry: Registry
) -> None:
    live = _runtime_pids(runtime)
    before = set(os.listdir(settings.run_dir))
    cli = _start_sleeper(settings, registry.ref("busybox:1.0"))
    orphan_qemu = qemu_pids(settings.run_dir) - live
    assert len(orphan_qemu) == 1
    cli.kill()
    cli.wait(timeout=10)
    assert not _wait_gone(orphan_qemu), "QEMU outlived a SIGKILLed hostd"
    (leftover,) = set(os.listdir(settings.run_dir)) - before
    assert remove_stale_run_dirs(settings.run_dir) == [leftover]
    assert set(os.listdir(settings.run_dir)) == before
