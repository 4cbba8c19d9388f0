"""Services: what the API asks for, done against the database and the hostd nodes.

Routes call these and nothing below them; each service raises only ServiceError subclasses
(services.errors) for the API's one error map to turn into HTTP.

```
Services.open(settings)   database: alembic upgrade head
                          nodes: the embedded hostd (ISORUN_NODES empty), or remote ones
                          SandboxService.start(): nodes started (embedded: boot files,
                          accelerator probe), rows and VMs reconciled, TTL reaper started
... requests ...
(exit)                    embedded VMs destroyed and their rows stopped (remote nodes keep
                          theirs for the next start), database closed
```
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from isorun_hostd.sandboxes import Runtime

from isorun_backend.core.config import BackendSettings
from isorun_backend.nodes import EmbeddedNode, Node, NodeUnavailable, RemoteNode
from isorun_backend.services.audit import AuditService
from isorun_backend.services.exec import ExecService
from isorun_backend.services.files import FileService
from isorun_backend.services.health import HealthService
from isorun_backend.services.processes import ProcessService
from isorun_backend.services.sandboxes import SandboxService
from isorun_backend.services.shells import ShellService
from isorun_backend.services.snapshots import SnapshotService
from isorun_backend.services.urls import UrlService
from isorun_backend.services.usage import Meter, UsageService
from isorun_backend.storage import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """Everything one backend process runs, opened and closed together."""

    db: Database
    # The embedded hostd; None when the sandboxes run on remote nodes.
    runtime: Runtime | None
    health: HealthService
    sandboxes: SandboxService
    snapshots: SnapshotService
    exec: ExecService
    processes: ProcessService
    shells: ShellService
    files: FileService
    usage: UsageService
    audit: AuditService
    urls: UrlService

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: BackendSettings) -> AsyncIterator[Services]:
        """Start the database, the nodes and the sandbox service; close them after.

        Raises:
            BootFilesError, FileNotFoundError: hostd cannot run VMs on this host.
        """
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.sqlalchemy_url)
        try:
            await db.upgrade()
            runtime = Runtime(settings.hostd()) if not settings.nodes else None
            nodes: list[Node] = (
                [EmbeddedNode(runtime)]
                if runtime is not None
                else [
                    RemoteNode(node.name, node.url, node.token.get_secret_value())
                    for node in settings.nodes
                ]
            )
            sandboxes = SandboxService(settings, db, nodes)
            await sandboxes.start()
            urls = UrlService(settings, db, sandboxes)
            try:
                yield cls(
                    db=db,
                    runtime=runtime,
                    health=HealthService(await _accelerator(runtime, nodes)),
                    sandboxes=sandboxes,
                    snapshots=SnapshotService(db, sandboxes),
                    exec=ExecService(sandboxes),
                    processes=ProcessService(sandboxes),
                    shells=ShellService(sandboxes),
                    files=FileService(sandboxes),
                    usage=UsageService(db, Meter(settings)),
                    audit=AuditService(db, nodes),
                    urls=urls,
                )
            finally:
                await urls.aclose()
                await sandboxes.aclose()
        finally:
            await db.aclose()


async def _accelerator(runtime: Runtime | None, nodes: list[Node]) -> Literal["kvm", "tcg"]:
    """The accelerator VMs get: the embedded probe's, or the first remote node's that answers."""
    if runtime is not None:
        return runtime.caps.accel
    for node in nodes:
        try:
            return (await node.info()).accelerator
        except NodeUnavailable as exc:
            log.warning("%s; asking the next node for its accelerator", exc)
    # No node answers now: TCG is the answer that promises no speed it may not have.
    return "tcg"
