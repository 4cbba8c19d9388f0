"""Fixtures for the end-to-end tests: a loopback registry with the fixture images, and one
hostd runtime for the session that boots real microVMs (KVM if the probe allows, else TCG).

Every test is checked for leaks: after it, no QEMU process, run folder entry, image cache file,
template file or network slot (namespace, veth, claim) may exist that did not exist before it,
other than those of sandboxes still alive in fixtures that outlive the test and the session
runtime's templates, warm pool and waiting restore targets (Runtime.pool_vms()).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from isorun_hostd.config import Settings
from isorun_hostd.net.apply import slots_opening
from isorun_hostd.sandboxes import Runtime

from tests.framework.registry import Registry, registry_with_fixtures
from tests.host_tools.leaks import HostSnapshot, qemu_folders, slot_names

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
    dirs = (settings.run_dir, settings.images_dir, settings.template_dir, settings.templates_prefix)
    before = HostSnapshot.take(*dirs)
    yield
    if "runtime" not in request.fixturenames:
        return
    runtime: Runtime = request.getfixturevalue("runtime")
    # The event loop is idle here, so the runtime's view cannot change under this check. A pool
    # QEMU may still be starting (its pid not yet known): its command line names its folder.
    after = HostSnapshot.take(*dirs)
    folders = {s.vm.paths.root.name for s in runtime.sandboxes}
    folders |= {vm.paths.root.name for vm in runtime.pool_vms()}
    leaked = after.added_since(before)
    qemus = leaked.get("qemu processes", set())
    named = qemu_folders({int(pid) for pid in qemus}, settings.run_dir)
    qemus.difference_update(pid for pid, folder in named.items() if folder in folders)
    leaked.get("run folder entries", set()).difference_update(folders)
    vms = [s.vm for s in runtime.sandboxes] + runtime.pool_vms()
    # A pool VM being launched may be building its slot: it holds none yet.
    held = {vm.slot.plan.index for vm in vms if vm.slot is not None}
    live_slots = slot_names(held | slots_opening())
    for kind in ("network namespaces", "host veths", "network slot claims"):
        leaked.get(kind, set()).difference_update(live_slots)
    # The runtime's own folder and its templates' files (a template's pool QEMUs are above).
    root, folders_kept = "", set()
    if runtime.templates is not None:
        root = runtime.templates.root.name
        folders_kept = {f"{root}/{t.folder.name}" for t in runtime.templates.templates}
    files = leaked.get("template files", set())
    files.difference_update(
        {f for f in files if f in (root, *folders_kept) or str(f).rsplit("/", 1)[0] in folders_kept}
    )
    # Verified blobs and built disks are meant to stay; anything in tmp/ is a leftover.
    cache = leaked.get("image cache files", set())
    cache.difference_update({f for f in cache if not str(f).startswith("tmp/")})
    assert not {k: v for k, v in leaked.items() if v}, f"left behind: {leaked}"
