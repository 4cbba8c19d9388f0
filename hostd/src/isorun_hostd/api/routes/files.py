"""Files in a sandbox, through the agent; contents stream both ways.

A read answers the file's stat in the ``X-Isorun-Stat`` header (JSON) and its bytes as the
body; a read that fails midway is cut off, never ended cleanly.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from isorun_hostd.agent_channel import FileStat
from isorun_hostd.agent_channel.protocol import Empty
from isorun_hostd.api.deps import SandboxDep
from isorun_hostd.api.models import STAT_HEADER, NodeMkdir, NodeRename, NodeWritten

router = APIRouter(prefix="/sandboxes/{sandbox_id}/files", tags=["files"])

OCTET_STREAM = "application/octet-stream"


@router.get("/content", name="read", response_class=StreamingResponse)
async def read_file(path: str, sandbox: SandboxDep) -> StreamingResponse:
    stat, body = await sandbox.channel.read_file(path)
    return StreamingResponse(
        body,
        media_type=OCTET_STREAM,
        headers={STAT_HEADER: stat.model_dump_json(exclude={"event"})},
    )


@router.put("/content", name="write")
async def write_file(
    path: str,
    request: Request,
    sandbox: SandboxDep,
    mode: Annotated[int, Query(ge=0, le=0o7777)] = 0o644,
    parents: bool = False,
) -> NodeWritten:
    written = await sandbox.channel.write_file(path, request.stream(), mode=mode, parents=parents)
    return NodeWritten(bytes=written)


@router.get("", name="list")
async def list_files(path: str, sandbox: SandboxDep) -> list[FileStat]:
    return await sandbox.channel.list_dir(path)


@router.get("/stat", name="stat")
async def stat_file(path: str, sandbox: SandboxDep) -> FileStat:
    return await sandbox.channel.call("stat", FileStat, path=path)


@router.post(
    "/mkdir", name="mkdir", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def make_dir(body: NodeMkdir, sandbox: SandboxDep) -> None:
    await sandbox.channel.call("mkdir", Empty, path=body.path, parents=body.parents)


@router.post(
    "/rename", name="rename", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def rename(body: NodeRename, sandbox: SandboxDep) -> None:
    await sandbox.channel.call("rename", Empty, src=body.src, dst=body.dst)


@router.delete("", name="remove", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def remove(path: str, sandbox: SandboxDep, recursive: bool = False) -> None:
    await sandbox.channel.call("remove", Empty, path=path, recursive=recursive)
