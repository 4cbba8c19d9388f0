"""Fixtures for the backend's API tests: one app for the session, booting real microVMs.

```
registry   loopback docker-registry with the fixture images (tests.framework.registry)
settings   data dir in tmp; aliases python -> the python fixture, busybox -> busybox fixture
app        create_app(settings) with its lifespan entered once (hostd start, migrations)
client     httpx over ASGITransport (in-process; bodies are buffered whole)
http       httpx over a real loopback socket to uvicorn serving the same app, for the tests
           that must see bodies stream
key        a tenant's API key; other_key: a second tenant's
engine     "sqlite" or "postgresql": the database under app (and new_database)
```

The database engine is a session-scoped parameter: modules marked ``engines("sqlite",
"postgresql")`` (api_support.BOTH_ENGINES) run once per engine, the rest on SQLite only. pytest
groups the tests by engine, so the app starts once per engine. PostgreSQL is a throwaway cluster
(postgres_cluster.py), started the first time a test asks for it.

After every test: no QEMU process but those of live sandboxes (and of hostd's warm pool, whose
VMs are named ``pool-...``), no live sandbox without a ``running`` row, and no ``running`` row
without a live sandbox.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import uvicorn
from api_support import NewDatabase, make_settings
from fastapi import FastAPI
from isorun_backend.core.config import BackendSettings
from isorun_backend.main import create_app
from isorun_backend.models import SandboxRow
from isorun_backend.services import Services
from isorun_backend.services.api_keys import create_key, create_tenant
from postgres_cluster import PostgresCluster, find_bindir, postgres_cluster
from sqlalchemy import select

from tests.framework.registry import Registry, free_port, registry_with_fixtures
from tests.host_tools.leaks import qemu_pids


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engines(*names): the database engines a module runs on")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("engines")
        engines = marker.args if marker else ("sqlite",)
        metafunc.parametrize("engine", engines, indirect=True, scope="session")


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh installs it)")
    with postgres_cluster(bindir) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def new_database(
    engine: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> NewDatabase:
    """Makes an empty database on the session's engine; returns its URL."""
    numbers = itertools.count()
    if engine == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        return lambda: cluster.create_database(f"isorun_{next(numbers)}")
    folder = tmp_path_factory.mktemp("sqlite")
    return lambda: f"sqlite+aiosqlite:///{folder / f'isorun_{next(numbers)}.db'}"


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    with registry_with_fixtures(python=True) as running:
        yield running


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    # Short on purpose: unix socket paths under it must stay below 108 bytes.
    with tempfile.TemporaryDirectory(prefix="isr-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def hostd_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One image cache and one set of boot files for the apps of both engines.
    return tmp_path_factory.mktemp("hostd")


@pytest.fixture(scope="session")
def settings(
    tmp_path_factory: pytest.TempPathFactory,
    run_dir: Path,
    registry: Registry,
    hostd_state_dir: Path,
    new_database: NewDatabase,
) -> BackendSettings:
    return make_settings(
        tmp_path_factory.mktemp("backend"),
        run_dir,
        registry,
        database_url=new_database(),
        hostd_state_dir=hostd_state_dir,
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def app(settings: BackendSettings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application
    assert not qemu_pids(settings.hostd_run_dir), "VMs survived the app's shutdown"


@pytest.fixture(scope="session")
def services(app: FastAPI) -> Services:
    running: Services = app.state.services
    return running


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://isorun.test") as c:
        yield c


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    # The app's lifespan already runs (fixture `app`); uvicorn only serves it.
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=120
    ) as c:
        yield c
    server.should_exit = True
    await task


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def key(services: Services) -> str:
    tenant = await create_tenant(services.db, "tenant-a")
    return (await create_key(services.db, tenant)).key


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def other_key(services: Services) -> str:
    tenant = await create_tenant(services.db, "tenant-b")
    return (await create_key(services.db, tenant)).key


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def no_leaks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    if "services" not in request.fixturenames:
        return
    services: Services = request.getfixturevalue("services")
    settings: BackendSettings = request.getfixturevalue("settings")
    # An expiry the reaper is carrying out may be between "QEMU gone" and "row stopped".
    for _ in range(50):
        live = {s.id: s.vm.pid for s in services.runtime.sandboxes}
        qemu = _sandbox_qemu_pids(settings.hostd_run_dir, set(live.values()))
        async with services.db.session() as session:
            running = set(
                await session.scalars(select(SandboxRow.id).where(SandboxRow.state == "running"))
            )
        if qemu == set(live.values()) and running == set(live):
            return
        await asyncio.sleep(0.1)
    assert qemu == set(live.values()), "QEMU without a sandbox"
    assert running == set(live), "running rows and live VMs disagree"


def _sandbox_qemu_pids(run_dir: Path, live: set[int]) -> set[int]:
    """The QEMU processes under ``run_dir`` but those waiting in hostd's warm pool (``-name
    pool-*`` and no sandbox's; a sandbox booted from the pool keeps that name)."""
    pids = set()
    for pid in qemu_pids(run_dir):
        if pid in live:
            pids.add(pid)
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        names = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == b"-name"]
        if not any(name.startswith(b"pool-") for name in names):
            pids.add(pid)
    return pids
