"""Sandboxes on this node: create (the backend names them), list, delete."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status

from isorun_hostd.api.deps import RuntimeDep, SandboxDep
from isorun_hostd.api.models import NodeSandbox, NodeSandboxCreate, NodeSandboxList
from isorun_hostd.sandboxes import Sandbox

router = APIRouter(prefix="/sandboxes", tags=["sandboxes"])


@router.post("", name="create", status_code=status.HTTP_201_CREATED)
async def create(body: NodeSandboxCreate, runtime: RuntimeDep) -> NodeSandbox:
    # Shielded: a backend that gives up mid-boot must not leave a half-made VM; the finished
    # one is then an orphan that the backend's reconciliation destroys.
    sandbox = await asyncio.shield(
        runtime.create(
            body.image_ref,
            vcpus=body.vcpus,
            mem_mib=body.mem_mib,
            sandbox_id=body.id,
            network=body.network,
        )
    )
    return public(sandbox)


@router.get("", name="list")
async def listing(runtime: RuntimeDep) -> NodeSandboxList:
    return NodeSandboxList(data=[public(sandbox) for sandbox in runtime.sandboxes])


@router.delete(
    "/{sandbox_id}", name="delete", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def delete(sandbox: SandboxDep, runtime: RuntimeDep) -> None:
    await asyncio.shield(runtime.destroy(sandbox))


def public(sandbox: Sandbox) -> NodeSandbox:
    spec = sandbox.vm.spec
    return NodeSandbox(
        id=sandbox.id, image_ref=sandbox.image.pinned, vcpus=spec.vcpus, mem_mib=spec.mem_mib
    )
