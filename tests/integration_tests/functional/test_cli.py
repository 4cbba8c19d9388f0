"""The developer CLI, run as a user would: a subprocess with its own environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from isorun_hostd.config import Settings
from isorun_hostd.sandboxes import Runtime

from tests.framework.registry import Registry
from tests.host_tools.leaks import qemu_pids

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ISORUN_STATE_DIR": str(settings.state_dir),
        "ISORUN_RUN_DIR": str(settings.run_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "isorun_hostd", *args],
        env=env,
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
    assert not qemu_pids(settings.run_dir) - {s.vm.pid for s in runtime.sandboxes}


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
