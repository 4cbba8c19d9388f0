"""`isorun up --local-images` in a subprocess, for tests that need a real API end to end.

```
with start_up(tmp_dir) as up:        # temp data dir, free port, real VMs (embedded hostd)
    Sandbox("python", api_url=up.url, api_key=up.key)
    up.cli("run", "python", "--", "true")
```
The first start of a data dir prints a key; later starts need ``key=`` (it is not shown again).
Stopped with SIGTERM on the way out, which destroys its VMs and its registry.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from isorun_backend.local_images.registry import free_port

READY_TIMEOUT_S = 240.0
COMMAND_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
CLI = (sys.executable, "-m", "isorun.cli")


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    data_dir: Path
    url: str
    key: str
    stderr: Path
    # The public URL edge's port (https://PORT-SANDBOX.isorun.localhost:{edge_port}).
    edge_port: int

    def env(self, key: str | None = None) -> dict[str, str]:
        return {**os.environ, "ISORUN_API_URL": self.url, "ISORUN_API_KEY": key or self.key}

    def cli(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            env=self.env(key),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STOP_TIMEOUT_S)


@contextlib.contextmanager
def start_up(
    data_dir: Path,
    *,
    key: str | None = None,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Up]:
    """`isorun up --local-images [args]` on ``data_dir``; ``key`` for a data dir that has one
    already (only the first start of a data dir prints a key); ``env`` adds settings (the
    embedded hostd's ``ISORUN_*`` too)."""
    port, edge_port = free_port(), free_port()
    stdout, stderr = data_dir / "up.out", data_dir / "up.err"
    ready = "ISORUN_API_URL=" if key else "ISORUN_API_KEY="
    env = {**os.environ, **(env or {}), "ISORUN_HOSTD_RUN_DIR": str(data_dir / "run")}
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(
            [
                *CLI,
                "up",
                "--local-images",
                "--port",
                str(port),
                "--urls",
                f"127.0.0.1:{edge_port}",
                "--data-dir",
                str(data_dir),
                *args,
            ],
            stdout=out,
            stderr=err,
            env=env,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while ready not in stdout.read_text():
            assert process.poll() is None, f"isorun up exited: {stderr.read_text()}"
            assert time.monotonic() < deadline, f"isorun up not ready: {stderr.read_text()}"
            time.sleep(0.2)
        printed = dict(line.split("=", 1) for line in stdout.read_text().splitlines())
        yield Up(
            process,
            data_dir,
            printed["ISORUN_API_URL"],
            key or printed["ISORUN_API_KEY"],
            stderr,
            edge_port,
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(STOP_TIMEOUT_S)
