"""Fixtures of the isorun-mcp tests: in-memory MCP sessions over a fake API, a real API, and the
`isorun-mcp` command serving it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from isorun import AsyncClient
from isorun.testing import FakeBackend
from isorun_backend.local_images.registry import free_port
from isorun_mcp import Profile, build_server
from mcp import ClientSession
from mcp.shared.memory import create_connected_server_and_client_session

from tests.framework.isorun_up import Up, start_up

SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 30.0


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def connect(
    fake: FakeBackend,
) -> Callable[[Profile], AbstractAsyncContextManager[ClientSession]]:
    """`async with connect("core") as client:` an initialised MCP client session, in memory,
    with the server's sessions talking to `fake`."""

    @asynccontextmanager
    async def session(profile: Profile) -> AsyncIterator[ClientSession]:
        server = build_server(
            profile, client_factory=lambda: AsyncClient(api_key=fake.api_key, transport=fake)
        )
        async with create_connected_server_and_client_session(
            server, read_timeout_seconds=timedelta(seconds=30)
        ) as client:
            yield client

    return session


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`isorun up --local-images`: a real API with real VMs, shared by a test module."""
    data_dir: Path = tmp_path_factory.mktemp("isorun-mcp-up")
    with start_up(data_dir) as running:
        yield running


@pytest.fixture(scope="session")
def mcp_command() -> str:
    """The path of the `isorun-mcp` console script."""
    path = shutil.which("isorun-mcp")
    assert path, "the isorun-mcp console script is not on PATH"
    return path


@pytest.fixture
def http_server(up: Up, mcp_command: str, tmp_path: Path) -> Iterator[str]:
    """`isorun-mcp --transport streamable-http` in a subprocess; yields its endpoint URL."""
    port = free_port()
    # A file, not a pipe: uvicorn logs every request, and nobody reads a pipe until the end.
    stderr = tmp_path / "isorun-mcp.err"
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [mcp_command, "--transport", "streamable-http", "--port", str(port)],
            env=up.env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            assert process.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "isorun-mcp did not listen in time"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(SERVER_STOP_TIMEOUT_S)
