"""spec/api.md "Snapshots": save a sandbox, list, get and delete snapshots."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from isorun_backend.api.deps import PrincipalDep, SnapshotsDep
from isorun_backend.api.errors import responses
from isorun_backend.models import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    SnapshotCreate,
    SnapshotList,
    SnapshotPublic,
)

router = APIRouter(tags=["snapshots"], responses=responses(401))


@router.post(
    "/sandboxes/{sandbox_id}/snapshots",
    name="create",
    status_code=status.HTTP_201_CREATED,
    responses=responses(404, 409, 422, 500, 503),
)
async def create_snapshot(
    sandbox_id: str,
    principal: PrincipalDep,
    snapshots: SnapshotsDep,
    body: SnapshotCreate | None = None,
) -> SnapshotPublic:
    return await snapshots.create(principal, sandbox_id, body or SnapshotCreate())


@router.get("/snapshots", name="list", responses=responses(400, 422))
async def list_snapshots(
    principal: PrincipalDep,
    *,
    snapshots: SnapshotsDep,
    sandbox_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    cursor: str | None = None,
) -> SnapshotList:
    return await snapshots.listing(principal, sandbox_id=sandbox_id, limit=limit, cursor=cursor)


@router.get("/snapshots/{snapshot_id}", name="get", responses=responses(404))
async def get_snapshot(
    snapshot_id: str, principal: PrincipalDep, snapshots: SnapshotsDep
) -> SnapshotPublic:
    return await snapshots.get(principal, snapshot_id)


@router.delete(
    "/snapshots/{snapshot_id}",
    name="delete",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(404, 503),
)
async def delete_snapshot(
    snapshot_id: str, principal: PrincipalDep, snapshots: SnapshotsDep
) -> None:
    await snapshots.delete(principal, snapshot_id)
