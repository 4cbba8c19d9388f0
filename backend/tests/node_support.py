"""Remote hostd nodes for the backend's tests: ``isorun-hostd serve`` as subprocesses.

Each node has its own state and run folders and its own token, on a loopback port, and no warm
pools (the placement tests count capacity and QEMUs exactly). ``stop``
ends it by PID (SIGTERM, then SIGKILL); ``kill`` is the crash the restart tests need.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.framework.registry import free_port
from tests.host_tools.leaks import qemu_pids

START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60


class HostdNode:
    """One ``isorun-hostd serve`` process; start() again after stop() or kill()."""

    def __init__(self, name: str, root: Path, run_dir: Path, token: str, vcpus: int) -> None:
        self.name = name
        self.root = root
        self.run_dir = run_dir
        self.token = token
        self.vcpus = vcpus
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, str]:
        return {"name": self.name, "url": self.url, "token": self.token}

    def start(self) -> None:
        env = {
            **os.environ,
            "ISORUN_STATE_DIR": str(self.root / "state"),
            "ISORUN_RUN_DIR": str(self.run_dir),
            "ISORUN_NODE_TOKEN": self.token,
            "ISORUN_CAPACITY_VCPUS": str(self.vcpus),
            # No warm pools: their waiting QEMUs hold capacity and would count as VMs here.
            "ISORUN_TEMPLATE_POOL_SIZE": "0",
            "ISORUN_RESTORE_POOL_SIZE": "0",
        }
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "hostd.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "isorun_hostd", "serve", "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node {self.name} exited: {self.log_tail()}")
            try:
                if self.get("/info").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"node {self.name} did not start: {self.log_tail()}")

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.get(f"{self.url}/node/v1{path}", headers=headers, timeout=30, trust_env=False)

    def sandbox_ids(self) -> set[str]:
        response = self.get("/sandboxes")
        response.raise_for_status()
        return {sandbox["id"] for sandbox in response.json()["data"]}

    def kill(self) -> None:
        """SIGKILL, as a crash: its VMs die with it (PDEATHSIG); its run folders stay."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(STOP_TIMEOUT_S)
        self.process = None

    def stop(self) -> None:
        """SIGTERM (hostd destroys its VMs), SIGKILL if it does not exit in time."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)
        self.process = None

    def wait_no_qemu(self, timeout_s: float = 30) -> set[int]:
        """The node's QEMU PIDs once none is left, or those still there at the timeout."""
        deadline = time.monotonic() + timeout_s
        while (left := qemu_pids(self.run_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    def log_tail(self) -> str:
        try:
            return (self.root / "hostd.log").read_text()[-3000:]
        except OSError:
            return "(no log)"
