"""Create -> first exec result, through the API (SDK) and straight on hostd: the API's overhead.

    uv run python -m bench.api [--runs 10] [--json bench/results/api.json]

Both sides boot the local python image (`isorun_backend.local_images`, the one `isorun up
--local-images` serves; already in each side's image cache before timing starts) with 1 vCPU and
1024 MiB, the SDK's defaults, and run `python -c 'print(2**32)'`:
  api_create_ms      AsyncSandbox.create() against `isorun up` (a subprocess on a free port)
  api_first_exec_ms  then sb.run(...) until its result is back
  api_total_ms       the two together: what an agent waits for before its first answer
  hostd_*_ms         the same on hostd's Runtime in this process (create, channel.exec, wait)
Destroys are outside every figure. Prints a table, writes JSON; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from isorun import AsyncSandbox
from isorun_backend.local_images import serve_local_images
from isorun_backend.local_images.registry import free_port
from isorun_hostd.agent_channel import ExecRequest
from isorun_hostd.config import Settings
from isorun_hostd.sandboxes import Runtime

from bench.boot import print_table, summary, write_json

ARGV = ["python", "-c", "print(2**32)"]
EXPECTED = b"4294967296\n"
VCPUS, MEMORY_MIB = 1, 1024
READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def measure_hostd(reference: str, settings: Settings, runs: int) -> dict[str, object]:
    runtime = Runtime(settings)
    await runtime.start()
    create_ms, exec_ms = [], []
    try:
        await runtime.destroy(await runtime.create(reference))  # pull and cache the image
        for _ in range(runs):
            started = time.perf_counter()
            sandbox = await runtime.create(reference, vcpus=VCPUS, mem_mib=MEMORY_MIB)
            create_ms.append(_ms(started))
            started = time.perf_counter()
            process = await sandbox.channel.exec(ExecRequest(argv=ARGV))
            output = b"".join([chunk.data async for chunk in process.output()])
            exec_ms.append(_ms(started))
            await runtime.destroy(sandbox)
            assert output == EXPECTED, output
        accel, reason = runtime.caps.accel, runtime.caps.accel_reason
    finally:
        await runtime.aclose()
    return {
        "accelerator": accel,
        "accelerator_reason": reason,
        "create_ms": create_ms,
        "first_exec_ms": exec_ms,
    }


async def measure_api(url: str, key: str, runs: int) -> dict[str, list[float]]:
    warm = await AsyncSandbox.create(api_url=url, api_key=key)  # pull and cache the image
    await warm.destroy()
    create_ms, exec_ms = [], []
    for _ in range(runs):
        started = time.perf_counter()
        sandbox = await AsyncSandbox.create(
            vcpus=VCPUS, memory_mib=MEMORY_MIB, api_url=url, api_key=key
        )
        create_ms.append(_ms(started))
        started = time.perf_counter()
        result = await sandbox.run(*ARGV)
        exec_ms.append(_ms(started))
        await sandbox.destroy()
        assert result.stdout.encode() == EXPECTED, result
    return {"create_ms": create_ms, "first_exec_ms": exec_ms}


@contextmanager
def isorun_up(data_dir: Path) -> Iterator[tuple[str, str]]:
    """`isorun up --local-images` on a free port; yields (url, first key); SIGTERM after."""
    out = data_dir / "up.out"
    env = {**os.environ, "ISORUN_HOSTD_RUN_DIR": str(data_dir / "run")}
    argv = [sys.executable, "-m", "isorun.cli", "up", "--local-images"]
    argv += ["--port", str(free_port()), "--urls", f"127.0.0.1:{free_port()}"]
    argv += ["--data-dir", str(data_dir)]
    with open(out, "wb") as stdout:
        process = subprocess.Popen(argv, stdout=stdout, env=env)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "ISORUN_API_KEY=" not in out.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("isorun up did not start (its stderr is above)")
            time.sleep(0.2)
        printed = dict(line.split("=", 1) for line in out.read_text().splitlines())
        yield printed["ISORUN_API_URL"], printed["ISORUN_API_KEY"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(STOP_TIMEOUT_S)


def totals(create: list[float], first_exec: list[float]) -> list[float]:
    return [c + e for c, e in zip(create, first_exec, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=Path("bench/results/api.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="isorun-bench-api-") as tmp:
        root = Path(tmp)
        with serve_local_images(root / "registry", log=print) as served:
            settings = Settings(state_dir=root / "state", run_dir=root / "run")
            hostd = asyncio.run(measure_hostd(served.aliases["python"], settings, args.runs))
        (root / "up").mkdir()
        with isorun_up(root / "up") as (url, key):
            api = asyncio.run(measure_api(url, key, args.runs))

    figures = {}
    for side, data in (("api", api), ("hostd", hostd)):
        create, first_exec = data["create_ms"], data["first_exec_ms"]
        assert isinstance(create, list) and isinstance(first_exec, list)
        figures[f"{side}_create_ms"] = summary(create)
        figures[f"{side}_first_exec_ms"] = summary(first_exec)
        figures[f"{side}_total_ms"] = summary(totals(create, first_exec))
    result = {
        "accelerator": hostd["accelerator"],
        "accelerator_reason": hostd["accelerator_reason"],
        "vm": {"vcpus": VCPUS, "mem_mib": MEMORY_MIB},
        "command": ARGV,
        **figures,
        "api_overhead_p50_ms": round(
            figures["api_total_ms"]["p50"] - figures["hostd_total_ms"]["p50"], 2
        ),
    }
    print_table(result, figures)
    print(f"API overhead (total p50, api - hostd): {result['api_overhead_p50_ms']} ms")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
