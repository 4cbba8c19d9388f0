"""Boot and exec figures for hostd's microVMs: prints a table and writes JSON. Never asserts.

    uv run python -m bench.boot [--boots 10] [--execs 200] [--json bench/results/boot.json]

Measures, on the python fixture image from a loopback registry:
  boot_ms         QEMU exec -> agent handshake done (cold boot, image already cached)
  exec_true_ms    round trip of `true` through the agent (start, end) in a running VM
  rss_mib/pss_mib host memory of one idle VM's QEMU process, a second after boot
and the accelerator used (KVM or TCG), which dominates every number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from isorun_hostd.agent_channel import ExecRequest
from isorun_hostd.config import Settings
from isorun_hostd.sandboxes import Runtime
from isorun_hostd.vm import HostCapabilities

from tests.framework.registry import registry_with_fixtures

IMAGE = "python:3.11-bookworm"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def memory_mib(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value, *_ = line.split()
        fields[key.rstrip(":")] = int(value)
    return fields["Rss"] / 1024, fields["Pss"] / 1024


async def measure(reference: str, settings: Settings, boots: int, execs: int) -> dict[str, object]:
    runtime = Runtime(settings)
    await runtime.start()
    try:
        await runtime.destroy(await runtime.create(reference))  # pull and cache the image
        boot_ms, rss, pss = [], [], []
        for _ in range(boots):
            sandbox = await runtime.create(reference)
            boot_ms.append(sandbox.vm.boot_ms)
            await asyncio.sleep(1)
            assert sandbox.vm.pid is not None
            r, p = memory_mib(sandbox.vm.pid)
            rss.append(r)
            pss.append(p)
            await runtime.destroy(sandbox)
        sandbox = await runtime.create(reference)
        exec_ms = []
        for _ in range(execs):
            started = time.perf_counter()
            process = await sandbox.channel.exec(ExecRequest(argv=["true"]))
            await process.wait()
            exec_ms.append((time.perf_counter() - started) * 1000)
        await runtime.destroy(sandbox)
        caps = runtime.caps
    finally:
        await runtime.aclose()
    return {
        **environment(caps),
        "image": IMAGE,
        "vm": {"vcpus": 1, "mem_mib": 256},
        "boot_ms": summary(boot_ms),
        "exec_true_ms": summary(exec_ms),
        "rss_mib": summary(rss),
        "pss_mib": summary(pss),
    }


def environment(caps: HostCapabilities) -> dict[str, object]:
    """The accelerator (with the probe's reason), QEMU and host that every figure depends on."""
    return {
        "accelerator": caps.accel,
        "accelerator_reason": caps.accel_reason,
        "qemu": caps.qemu_version,
        "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
    }


def write_json(path: Path, result: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {path}")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 2),
        "p99": round(percentile(values, 99), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def print_table(result: dict[str, object], metrics: Iterable[str]) -> None:
    """The accelerator line, then one row of ``summary`` figures per metric of ``result``."""
    print(f"accelerator: {str(result['accelerator']).upper()} ({result['accelerator_reason']})")
    print(f"{'metric':<20}{'n':>6}{'p50':>10}{'p99':>10}{'min':>10}{'max':>10}")
    for key in metrics:
        s = result[key]
        assert isinstance(s, dict)
        print(f"{key:<20}{s['n']:>6}{s['p50']:>10}{s['p99']:>10}{s['min']:>10}{s['max']:>10}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=10)
    parser.add_argument("--execs", type=int, default=200)
    parser.add_argument("--json", type=Path, default=Path("bench/results/boot.json"))
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="isorun-bench-") as tmp,
        registry_with_fixtures(python=True) as registry,
    ):
        settings = Settings(state_dir=Path(tmp) / "state", run_dir=Path(tmp) / "run")
        result = asyncio.run(measure(registry.ref(IMAGE), settings, args.boots, args.execs))
    print_table(result, ("boot_ms", "exec_true_ms", "rss_mib", "pss_mib"))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
