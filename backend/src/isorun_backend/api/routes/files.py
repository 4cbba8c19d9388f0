"""spec/api.md "Files": contents streamed both ways, listings, stat and tree changes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from isorun_backend.api.deps import FilesDep, PrincipalDep
from isorun_backend.api.errors import responses
from isorun_backend.models import (
    FileList,
    FileStatPublic,
    FileWritten,
    MkdirCreate,
    RenameCreate,
)

router = APIRouter(
    prefix="/sandboxes/{sandbox_id}/files",
    tags=["files"],
    responses=responses(400, 401, 404, 409),
)

GuestPathQuery = Annotated[str, Query(description="an absolute path in the guest")]
OCTET_STREAM = "application/octet-stream"


@router.get(
    "/content",
    name="read",
    response_class=StreamingResponse,
    responses={200: {"content": {OCTET_STREAM: {}}, "description": "the file's bytes"}},
)
async def read_file(
    sandbox_id: str, path: GuestPathQuery, principal: PrincipalDep, files: FilesDep
) -> StreamingResponse:
    # Opened before the response starts, so a missing file is a 404, not a broken body. No
    # Content-Length: the file may change while it streams; a transfer that breaks midway
    # is cut off rather than ended cleanly, so a short body is never mistaken for the file.
    _, body = await files.read(principal, sandbox_id, path)
    return StreamingResponse(body, media_type=OCTET_STREAM)


@router.put(
    "/content",
    name="write",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def write_file(
    sandbox_id: str,
    *,
    path: GuestPathQuery,
    request: Request,
    principal: PrincipalDep,
    files: FilesDep,
    mode: Annotated[int, Query(ge=0, le=0o7777)] = 0o644,
    parents: bool = False,
) -> FileWritten:
    # request.stream() hands the body over as it arrives; the agent's credit window paces it.
    return await files.write(
        principal, sandbox_id, path, request.stream(), mode=mode, parents=parents
    )


@router.get("", name="list")
async def list_files(
    sandbox_id: str, path: GuestPathQuery, principal: PrincipalDep, files: FilesDep
) -> FileList:
    return await files.listing(principal, sandbox_id, path)


@router.get("/stat", name="stat")
async def stat_file(
    sandbox_id: str, path: GuestPathQuery, principal: PrincipalDep, files: FilesDep
) -> FileStatPublic:
    return await files.stat(principal, sandbox_id, path)


@router.post(
    "/mkdir", name="mkdir", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def make_dir(
    sandbox_id: str, body: MkdirCreate, principal: PrincipalDep, files: FilesDep
) -> None:
    await files.mkdir(principal, sandbox_id, body.path, body.parents)


@router.post(
    "/rename", name="rename", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def rename_file(
    sandbox_id: str, body: RenameCreate, principal: PrincipalDep, files: FilesDep
) -> None:
    await files.rename(principal, sandbox_id, body.src, body.dst)


@router.delete("", name="delete", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_file(
    sandbox_id: str,
    path: GuestPathQuery,
    principal: PrincipalDep,
    files: FilesDep,
    recursive: bool = False,
) -> None:
    await files.remove(principal, sandbox_id, path, recursive)
