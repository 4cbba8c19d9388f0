"""The node API's routes, all under /node/v1 and behind the node token."""

from fastapi import APIRouter, Depends

from isorun_hostd.api.deps import require_token
from isorun_hostd.api.routes import (
    audit,
    exec,
    files,
    network,
    node,
    processes,
    sandboxes,
    snapshots,
)

router = APIRouter(prefix="/node/v1", dependencies=[Depends(require_token)])
for module in (node, sandboxes, snapshots, network, exec, processes, files, audit):
    router.include_router(module.router)
