"""Saved sandbox states on this node: fork, named snapshots, hibernate and resume.

```
POST   /sandboxes/{id}/fork {"count"}          save once ─► count clones (ids chosen here)
POST   /sandboxes/{id}/snapshots {"id"}        save under the backend's snapshot id
GET    /snapshots                              the named snapshots on this node
DELETE /snapshots/{id}                         absent is fine (204 either way)
POST   /snapshots/{id}/restore {"id", "network"}  a new sandbox from it, under the backend's id
POST   /sandboxes/{id}/hibernate               save ─► destroy the VM; state kept on disk
POST   /sandboxes/{id}/resume {"network"}?     the same id back from its hibernation
DELETE /hibernations/{id}                      forget a hibernated sandbox's state
```
Every save and restore is shielded: a backend that gives up midway must not leave a half-made
VM or a half-written state folder (a finished clone is then an orphan for reconciliation).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status

from isorun_hostd.api.deps import RuntimeDep, SandboxDep
from isorun_hostd.api.models import (
    NodeFork,
    NodeRestore,
    NodeResume,
    NodeSandbox,
    NodeSandboxList,
    NodeSnapshot,
    NodeSnapshotCreate,
    NodeSnapshotList,
)
from isorun_hostd.api.routes.sandboxes import public

router = APIRouter(tags=["snapshots"])


@router.post("/sandboxes/{sandbox_id}/fork", name="fork", status_code=status.HTTP_201_CREATED)
async def fork(body: NodeFork, sandbox: SandboxDep, runtime: RuntimeDep) -> NodeSandboxList:
    clones = await asyncio.shield(runtime.fork(sandbox, body.count))
    return NodeSandboxList(data=[public(clone) for clone in clones])


@router.post(
    "/sandboxes/{sandbox_id}/snapshots", name="snapshot", status_code=status.HTTP_201_CREATED
)
async def snapshot(
    body: NodeSnapshotCreate, sandbox: SandboxDep, runtime: RuntimeDep
) -> NodeSnapshot:
    meta = await asyncio.shield(runtime.snapshot(sandbox, snapshot_id=body.id))
    return NodeSnapshot.from_meta(meta)


@router.get("/snapshots", name="list")
async def listing(runtime: RuntimeDep) -> NodeSnapshotList:
    metas = await asyncio.to_thread(runtime.snapshots.all)
    return NodeSnapshotList(data=[NodeSnapshot.from_meta(meta) for meta in metas])


@router.delete(
    "/snapshots/{snapshot_id}",
    name="delete",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete(snapshot_id: str, runtime: RuntimeDep) -> None:
    await asyncio.to_thread(runtime.snapshots.delete, snapshot_id)


@router.post(
    "/snapshots/{snapshot_id}/restore", name="restore", status_code=status.HTTP_201_CREATED
)
async def restore(snapshot_id: str, body: NodeRestore, runtime: RuntimeDep) -> NodeSandbox:
    sandbox = await asyncio.shield(
        runtime.from_snapshot(snapshot_id, sandbox_id=body.id, network=body.network)
    )
    return public(sandbox)


@router.post("/sandboxes/{sandbox_id}/hibernate", name="hibernate")
async def hibernate(sandbox: SandboxDep, runtime: RuntimeDep) -> NodeSnapshot:
    meta = await asyncio.shield(runtime.hibernate(sandbox))
    return NodeSnapshot.from_meta(meta)


@router.post("/sandboxes/{sandbox_id}/resume", name="resume")
async def resume(
    sandbox_id: str, runtime: RuntimeDep, body: NodeResume | None = None
) -> NodeSandbox:
    network = body.network if body is not None else None
    sandbox = await asyncio.shield(runtime.resume(sandbox_id, network=network))
    return public(sandbox)


@router.delete(
    "/hibernations/{sandbox_id}",
    name="forget",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def forget(sandbox_id: str, runtime: RuntimeDep) -> None:
    await asyncio.to_thread(runtime.hibernations.delete, sandbox_id)
