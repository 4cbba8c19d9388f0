"""One module per resource of spec/api.md; ``router`` mounts them all under ``/v1``."""

from fastapi import APIRouter

from isorun_backend.api.routes import (
    audit,
    exec,
    files,
    health,
    processes,
    sandboxes,
    shells,
    snapshots,
    urls,
    usage,
)

router = APIRouter(prefix="/v1")
for module in (health, sandboxes, snapshots, exec, processes, shells, urls, files, usage, audit):
    router.include_router(module.router)
