"""Processes in a sandbox: the agent's list, and signals to a process group."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from isorun_hostd.agent_channel.protocol import Empty, ProcessList
from isorun_hostd.api.deps import SandboxDep
from isorun_hostd.api.models import NodeSignal

router = APIRouter(prefix="/sandboxes/{sandbox_id}/processes", tags=["processes"])


@router.get("", name="list")
async def listing(sandbox: SandboxDep) -> ProcessList:
    return await sandbox.channel.call("ps", ProcessList)


@router.post(
    "/{pid}/signal",
    name="signal",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def send_signal(pid: int, body: NodeSignal, sandbox: SandboxDep) -> None:
    await sandbox.channel.call("signal", Empty, pid=pid, signal=body.signal)
