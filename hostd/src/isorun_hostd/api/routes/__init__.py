"""The node API's routes, all under /node/v1 and behind the node token."""

from fastapi import APIRouter, Depends

from isorun_hostd.api.deps import require_token
from isorun_hostd.api.routes import (
    audit,
    exec,
    files,
    network,
    node,
    ports,
    processes,
    sandboxes,
    shells,
    snapshots,
)

router = APIRouter(prefix="/node/v1")
_guarded = APIRouter(dependencies=[Depends(require_token)])
for module in (node, sandboxes, snapshots, network, exec, processes, shells, files, audit):
    _guarded.include_router(module.router)
router.include_router(_guarded)
# A WebSocket is no Request for the HTTP token check, so the attach and the port connection
# check the token themselves.
router.include_router(shells.attach_router)
router.include_router(ports.router)
