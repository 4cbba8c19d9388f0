"""Fixtures of the isorun-mcp tests: in-memory MCP sessions over a fake API, and a real API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from isorun import AsyncClient
from isorun.testing import FakeBackend
from isorun_mcp import Profile, build_server
from mcp import ClientSession
from mcp.shared.memory import create_connected_server_and_client_session

from tests.framework.isorun_up import Up, start_up


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
