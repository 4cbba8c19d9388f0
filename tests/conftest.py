"""Fixtures for the end-to-end tests: a loopback registry with the fixture images, and one
hostd runtime for the session that boots real microVMs (KVM if the probe allows, else TCG).

Every test is checked for leaks: after it, no QEMU process, run folder entry or image cache
file may exist that did not exist before it, other than those of sandboxes still alive in
fixtures that outlive the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from isorun_hostd.config import Settings
from isorun_hostd.sandboxes import Runtime

from tests.framework.registry import Registry, registry_with_fixtures
from tests.host_tools.leaks import HostSnapshot

PYTHON_IMAGE = "python:3.11-bookworm"


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    with registry_with_fixtures(python=True) as running:
        yield running


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("hostd")
    return Settings(state_dir=root / "state", run_dir=root / "run")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime(settings)
    await rt.start()
    yield rt
    await rt.aclose()


@pytest.fixture(scope="session")
def python_ref(registry: Registry) -> str:
    return registry.ref(PYTHON_IMAGE)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest, settings: Settings) -> Iterator[None]:
    before = HostSnapshot.take(settings.run_dir, settings.images_dir)
    yield
    if "runtime" not in request.fixturenames:
        return
    runtime: Runtime = request.getfixturevalue("runtime")
    after = HostSnapshot.take(settings.run_dir, settings.images_dir)
    live = runtime.sandboxes
    leaked = after.added_since(before)
    leaked.get("qemu processes", set()).difference_update(s.vm.pid for s in live)
    leaked.get("run folder entries", set()).difference_update(s.id for s in live)
    # Verified blobs and built disks are meant to stay; anything in tmp/ is a leftover.
    cache = leaked.get("image cache files", set())
    cache.difference_update({f for f in cache if not str(f).startswith("tmp/")})
    assert not {k: v for k, v in leaked.items() if v}, f"left behind: {leaked}"
