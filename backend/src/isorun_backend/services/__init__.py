"""Services: what the API asks for, done against the database and the embedded hostd.

Routes call these and nothing below them; each service raises only ServiceError subclasses
(services.errors) for the API's one error map to turn into HTTP.

```
Services.open(settings)   database: alembic upgrade head
                          hostd Runtime.start(): boot files, accelerator probe
                          SandboxService.start(): orphaned rows stopped, TTL reaper started
... requests ...
(exit)                    every VM destroyed, rows stopped, database closed
```
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from isorun_hostd.sandboxes import Runtime

from isorun_backend.core.config import BackendSettings
from isorun_backend.services.exec import ExecService
from isorun_backend.services.files import FileService
from isorun_backend.services.health import HealthService
from isorun_backend.services.processes import ProcessService
from isorun_backend.services.sandboxes import SandboxService
from isorun_backend.services.usage import Meter, UsageService
from isorun_backend.storage import Database


@dataclass(frozen=True)
class Services:
    """Everything one backend process runs, opened and closed together."""

    db: Database
    runtime: Runtime
    health: HealthService
    sandboxes: SandboxService
    exec: ExecService
    processes: ProcessService
    files: FileService
    usage: UsageService

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: BackendSettings) -> AsyncIterator[Services]:
        """Start the database, the embedded hostd and the sandbox service; close them after.

        Raises:
            BootFilesError, FileNotFoundError: hostd cannot run VMs on this host.
        """
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.sqlalchemy_url)
        try:
            await db.upgrade()
            runtime = Runtime(settings.hostd())
            await runtime.start()
            sandboxes = SandboxService(settings, db, runtime)
            await sandboxes.start()
            try:
                yield cls(
                    db=db,
                    runtime=runtime,
                    health=HealthService(runtime),
                    sandboxes=sandboxes,
                    exec=ExecService(sandboxes),
                    processes=ProcessService(sandboxes),
                    files=FileService(sandboxes),
                    usage=UsageService(db, Meter(settings)),
                )
            finally:
                await sandboxes.aclose()
        finally:
            await db.aclose()
