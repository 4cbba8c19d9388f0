"""Interactive latency: a keystroke's echo through a persistent shell. Prints, never asserts.

    uv run python -m bench.urls [--keys 200] [--json bench/results/urls.json]

One shell (`/bin/sh` on the guest's terminal, python image, 1 vCPU) per side; each sample
sends one byte and waits for the terminal to echo it (the guest kernel's line discipline
echoes, so this is the path itself: transport, agent, pty and back):
  hostd_echo_ms   on hostd's Runtime in this process: the agent channel straight
  api_echo_ms     through `isorun up` (a subprocess): the SDK's WebSocket, the backend's
                  relay, the embedded node and the agent channel
The first 10 keys of each side are a warm-up, outside the figures. Public URL latency (warm
and resume-on-request) joins this file with the URLs themselves (issue 7).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from isorun import AsyncSandbox, AsyncTerminal
from isorun_backend.local_images import serve_local_images
from isorun_hostd.agent_channel import ShellEvent
from isorun_hostd.config import Settings
from isorun_hostd.sandboxes import Runtime
from isorun_hostd.vm.capabilities import HostCapabilities

from bench.api import isorun_up
from bench.boot import print_table, summary, write_json

WARM_UP = 10
KEY = b"k"
# Ctrl-U: the line discipline drops the typed line, so the shell never runs it.
KILL_LINE = b"\x15"
LINE_CHUNK = 64


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def hostd_echo(
    reference: str, settings: Settings, keys: int
) -> tuple[list[float], HostCapabilities]:
    runtime = Runtime(settings)
    await runtime.start()
    try:
        sandbox = await runtime.create(reference)
        opened = await sandbox.open_shell(["/bin/sh"])
        figures: list[float] = []
        async with sandbox.attached_shell(opened.id, write=True) as shell:
            output = aiter(shell.events())
            for i in range(WARM_UP + keys):
                started = time.perf_counter()
                await shell.write(KEY)
                await _until_echo(output)
                if i >= WARM_UP:
                    figures.append(_ms(started))
                if i % LINE_CHUNK == LINE_CHUNK - 1:
                    await shell.write(KILL_LINE)
        await runtime.destroy(sandbox)
        return figures, runtime.caps
    finally:
        await runtime.aclose()


async def _until_echo(output: AsyncIterator[bytes | ShellEvent]) -> None:
    async for item in output:
        if isinstance(item, bytes) and KEY in item:
            return
    raise RuntimeError("the shell ended during the bench")


async def api_echo(url: str, key: str, keys: int) -> list[float]:
    sandbox = await AsyncSandbox.create(api_url=url, api_key=key)
    try:
        shell = await sandbox.shells.create(["/bin/sh"])
        figures: list[float] = []
        async with sandbox.shells.attach(shell.id, write=True) as term:
            for i in range(WARM_UP + keys):
                started = time.perf_counter()
                await term.send(KEY)
                await _until_terminal_echo(term)
                if i >= WARM_UP:
                    figures.append(_ms(started))
                if i % LINE_CHUNK == LINE_CHUNK - 1:
                    await term.send(KILL_LINE)
        return figures
    finally:
        await sandbox.destroy()


async def _until_terminal_echo(term: AsyncTerminal) -> None:
    while True:
        item = await term.recv(timeout=30)
        if isinstance(item, bytes) and KEY in item:
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--json", type=Path, default=Path("bench/results/urls.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="isorun-bench-urls-") as tmp:
        root = Path(tmp)
        with serve_local_images(root / "registry", log=print) as served:
            settings = Settings(state_dir=root / "state", run_dir=root / "run")
            hostd, caps = asyncio.run(hostd_echo(served.aliases["python"], settings, args.keys))
        (root / "up").mkdir()
        with isorun_up(root / "up") as (url, key):
            api = asyncio.run(api_echo(url, key, args.keys))
    result = {
        "accelerator": caps.accel,
        "accelerator_reason": caps.accel_reason,
        "keys": args.keys,
        "hostd_echo_ms": summary(hostd),
        "api_echo_ms": summary(api),
    }
    print_table(result, ("hostd_echo_ms", "api_echo_ms"))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
