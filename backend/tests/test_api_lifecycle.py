"""Failure paths of create, restart reconciliation, shutdown, settings and the image error map.

The create failures are injected at the service (a broken database, a VM that will not boot);
the restart test starts a second app on its own database, as a restarted process would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from api_support import BOTH_ENGINES, NewDatabase, assert_problem, auth, make_settings
from isorun_backend.core.config import BackendSettings
from isorun_backend.core.security import Principal
from isorun_backend.main import create_app
from isorun_backend.models import Base, SandboxCreate, SandboxRow, Tenant
from isorun_backend.services import Services
from isorun_backend.services.api_keys import authenticate, create_key, create_tenant
from isorun_backend.services.errors import InternalError, Unavailable
from isorun_backend.storage import Database
from isorun_hostd.vm.errors import BootTimeout, LaunchError
from sqlalchemy import func, select

from tests.framework.registry import Registry
from tests.host_tools.leaks import qemu_pids

pytestmark = [pytest.mark.asyncio(loop_scope="session"), BOTH_ENGINES]


async def _row_count(services: Services, tenant_id: str) -> int:
    async with services.db.session() as session:
        count = await session.scalar(
            select(func.count()).select_from(SandboxRow).where(SandboxRow.tenant_id == tenant_id)
        )
    return count or 0


@pytest_asyncio.fixture(loop_scope="session")
async def principal(services: Services, key: str) -> Principal:
    # The session's loop: asyncpg connections are bound to the loop that opened them.
    return await authenticate(services.db, key)


@pytest.mark.vm
async def test_a_failed_database_insert_destroys_the_vm(
    services: Services, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_create = services.runtime.create
    booted: list[str] = []

    async def create_then_break_the_database(*args: Any, **kwargs: Any) -> Any:
        sandbox = await real_create(*args, **kwargs)
        booted.append(sandbox.id)

        def broken() -> Any:
            raise RuntimeError("database down")

        monkeypatch.setattr(services.db, "session", broken)
        return sandbox

    monkeypatch.setattr(services.runtime, "create", create_then_break_the_database)
    with pytest.raises(RuntimeError, match="database down"):
        await services.sandboxes.create(principal, SandboxCreate(image="busybox", memory_mib=256))
    assert booted and booted[0] not in {s.id for s in services.runtime.sandboxes}
    # The autouse leak check then finds no QEMU and no running row.


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (LaunchError("QEMU failed for VM x: exit 1"), InternalError),
        (BootTimeout("VM x: the guest agent did not answer within 60 s"), Unavailable),
    ],
)
async def test_a_vm_that_does_not_boot_leaves_no_row_and_frees_the_key(
    services: Services,
    principal: Principal,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    expected: type[Exception],
) -> None:
    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    before = await _row_count(services, principal.tenant_id)
    monkeypatch.setattr(services.runtime, "create", fail)
    body = SandboxCreate(image="busybox")
    for _ in range(2):  # the second try gets the same key: released, not "in progress"
        with pytest.raises(expected):
            await services.sandboxes.create(principal, body, idempotency_key="boot-fails")
    assert await _row_count(services, principal.tenant_id) == before


async def test_a_refused_image_leaves_no_row(
    client: httpx.AsyncClient, services: Services, key: str, principal: Principal
) -> None:
    before = await _row_count(services, principal.tenant_id)
    response = await client.post("/v1/sandboxes", json={"image": "x:latest"}, headers=auth(key))
    assert_problem(response, 422, "image_rejected")
    assert await _row_count(services, principal.tenant_id) == before


@pytest.fixture
def restart_settings(
    tmp_path: Path, registry: Registry, settings: BackendSettings, new_database: NewDatabase
) -> Iterator[BackendSettings]:
    # Its own database and VM folder; the boot files and image cache of the session's hostd.
    run_dir = Path(f"/tmp/isr-restart-{tmp_path.name[-8:]}")
    run_dir.mkdir()
    yield make_settings(
        tmp_path / "data",
        run_dir,
        registry,
        database_url=new_database(),
        hostd_state_dir=settings.hostd().state_dir,
    )
    run_dir.rmdir()


@pytest.mark.vm
async def test_restart_stops_rows_left_running_and_shutdown_destroys_vms(
    restart_settings: BackendSettings,
) -> None:
    # What a crashed process leaves: a migrated database with a row still marked running.
    restart_settings.data_dir.mkdir()
    db = Database(restart_settings.sqlalchemy_url)
    await db.upgrade()
    tenant = await create_tenant(db, "restart")
    key = (await create_key(db, tenant)).key
    now = dt.datetime.now(dt.UTC)
    async with db.session() as session, session.begin():
        session.add(
            SandboxRow(
                id="sb-crashed00000",
                tenant_id=tenant,
                image="busybox",
                image_ref="example/busybox@sha256:" + "0" * 64,
                state="running",
                vcpus=1,
                memory_mib=256,
                env={},
                meta={},
                labels={},
                created_at=now,
                expires_at=now + dt.timedelta(hours=1),
            )
        )
    await db.aclose()

    app = create_app(restart_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/v1/sandboxes/sb-crashed00000", headers=auth(key))
            assert response.json()["state"] == "stopped"
            response = await client.post(
                "/v1/sandboxes", json={"image": "busybox", "memory_mib": 256}, headers=auth(key)
            )
            assert response.status_code == 201, response.text
            survivor = response.json()["id"]
            assert qemu_pids(restart_settings.hostd_run_dir)
    assert not qemu_pids(restart_settings.hostd_run_dir)

    db = Database(restart_settings.sqlalchemy_url)
    async with db.session() as session:
        row = await session.get(SandboxRow, survivor)
        assert await session.get(Tenant, tenant) is not None
    await db.aclose()
    assert row is not None and row.state == "stopped"


async def test_migrations_match_the_tables(new_database: NewDatabase) -> None:
    db = Database(new_database())
    await db.upgrade()
    await db.upgrade()  # a second start finds nothing to do
    async with db.engine.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    await db.aclose()
    assert diff == []
