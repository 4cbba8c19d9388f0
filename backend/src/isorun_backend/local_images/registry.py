"""Debian's `docker-registry` (distribution 2.8) on a loopback port, started and stopped by PID.

`registry_process` is the one way isorun runs it: `isorun up --local-images` serves its base
images from one, and the test harness (tests/framework/registry.py) adds auth and fixtures on
top. The config is written as JSON, which the registry's YAML parser reads, into a folder of the
caller's (Debian's /etc/docker/registry/config.yml turns on htpasswd auth with a directory as the
file); nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from isorun_hostd.vm.process import die_with_parent

REGISTRY_BIN = "docker-registry"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RegistryProcess:
    """A running registry: `host` is `127.0.0.1:PORT` (the registry part of references)."""

    host: str
    url: str
    pid: int


def _config(port: int, storage: Path, auth: dict[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "isorun-loopback-registry"},
    }
    if auth:
        config["auth"] = auth
    return config


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{REGISTRY_BIN} exited {process.returncode}: {log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/v2/", timeout=1.0, trust_env=False).status_code in (200, 401):
                return
        time.sleep(0.05)
    raise RuntimeError(f"{REGISTRY_BIN} not ready after {READY_TIMEOUT_S} s: {log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def registry_process(
    directory: Path, storage: Path, auth: dict[str, Any] | None = None
) -> Iterator[RegistryProcess]:
    """Run a registry on a free loopback port until the block ends, then stop it by PID.

    Args:
        directory: Where its config.yml and registry.log go.
        storage: Its storage root; kept afterwards (the caller decides whether it is a cache).
        auth: The config's `auth` section (htpasswd, token), or None for anonymous push/pull.

    Raises:
        RuntimeError: It exited or did not answer `GET /v2/` within READY_TIMEOUT_S.
    """
    directory.mkdir(parents=True, exist_ok=True)
    storage.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_path = directory / "config.yml"
    config_path.write_text(json.dumps(_config(port, storage, auth), indent=2))
    log = directory / "registry.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # A SIGKILLed `isorun up` cannot stop it by PID; the kernel does.
            preexec_fn=die_with_parent,  # noqa: PLW1509 (one prctl call, takes no lock)
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(process, url, log)
        yield RegistryProcess(host=f"127.0.0.1:{port}", url=url, pid=process.pid)
    finally:
        _stop(process)
