"""Interactive latency: public URLs, warm and cold, and a shell's keystroke echo. Prints, never
asserts.

    uv run python -m bench.urls [--keys 200] [--requests 100] [--wakes 5] [--json ...]

One shell (`/bin/sh` on the guest's terminal, python image, 1 vCPU) per side; each sample
sends one byte and waits for the terminal to echo it (the guest kernel's line discipline
echoes, so this is the path itself: transport, agent, pty and back):
  hostd_echo_ms   on hostd's Runtime in this process: the agent channel straight
  api_echo_ms     through `isorun up` (a subprocess): the SDK's WebSocket, the backend's
                  relay, the embedded node and the agent channel
The first 10 keys of each side are a warm-up, outside the figures.

Public URLs, through `isorun up`'s edge (TLS, HTTP/1.1 with keep-alive, one client), to
`python3 -m http.server` in the sandbox serving a 2-byte file:
  url_warm_ms     a GET on a running sandbox: edge, token check, count, the agent's connect
                  op, HTTP/1.1 to the guest server and back (the first 5 are a warm-up)
  url_cold_ms     a GET on a hibernated sandbox: the same, after the resume it triggers
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
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


SERVE = (
    "mkdir -p /srv && echo ok > /srv/ok && cd /srv && "
    "nohup python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &"
)


async def url_latency(
    url: str, key: str, cafile: Path, requests: int, wakes: int
) -> tuple[list[float], list[float]]:
    sandbox = await AsyncSandbox.create(api_url=url, api_key=key)
    try:
        await sandbox.run("sh", "-c", SERVE)
        public = await sandbox.url(8000)
        target = f"{public.origin}/ok"
        headers = {"X-Isorun-Token": public.token}
        async with httpx.AsyncClient(verify=str(cafile), trust_env=False, timeout=60) as edge:
            for _ in range(300):
                if (await edge.get(target, headers=headers)).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the guest's http.server did not answer through its URL")
            warm: list[float] = []
            for i in range(WARM_UP // 2 + requests):
                started = time.perf_counter()
                (await edge.get(target, headers=headers)).raise_for_status()
                if i >= WARM_UP // 2:
                    warm.append(_ms(started))
            cold: list[float] = []
            for _ in range(wakes):
                await sandbox.hibernate()
                started = time.perf_counter()
                (await edge.get(target, headers=headers)).raise_for_status()
                cold.append(_ms(started))
        return warm, cold
    finally:
        await sandbox.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--wakes", type=int, default=5)
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
            cafile = root / "up" / "edge" / "edge-cert.pem"
            warm, cold = asyncio.run(url_latency(url, key, cafile, args.requests, args.wakes))
    result = {
        "accelerator": caps.accel,
        "accelerator_reason": caps.accel_reason,
        "keys": args.keys,
        "hostd_echo_ms": summary(hostd),
        "api_echo_ms": summary(api),
        "requests": args.requests,
        "url_warm_ms": summary(warm),
        "wakes": args.wakes,
        "url_cold_ms": summary(cold),
    }
    print_table(result, ("hostd_echo_ms", "api_echo_ms", "url_warm_ms", "url_cold_ms"))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
