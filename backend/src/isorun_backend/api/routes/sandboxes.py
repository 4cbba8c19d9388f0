"""spec/api.md "Sandboxes": create, list, get, delete, keepalive, fork, hibernate, resume;
"Network": a sandbox's egress policy and secrets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from isorun_backend.api.deps import PrincipalDep, SandboxesDep
from isorun_backend.api.errors import responses
from isorun_backend.models import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    ForkCreate,
    ForkList,
    NetworkPublic,
    NetworkUpdate,
    SandboxCreate,
    SandboxList,
    SandboxPublic,
    SandboxState,
    SandboxUpdate,
)
from isorun_backend.services.errors import InvalidRequest

router = APIRouter(prefix="/sandboxes", tags=["sandboxes"], responses=responses(401))


@router.post(
    "",
    name="create",
    status_code=status.HTTP_201_CREATED,
    responses=responses(404, 409, 422, 429, 500, 502, 503),
)
async def create_sandbox(
    body: SandboxCreate,
    principal: PrincipalDep,
    sandboxes: SandboxesDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> SandboxPublic:
    sandbox, replayed = await sandboxes.create(principal, body, idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return sandbox


@router.get("", name="list", responses=responses(400, 422))
async def list_sandboxes(
    principal: PrincipalDep,
    *,
    sandboxes: SandboxesDep,
    state: SandboxState | None = None,
    label: Annotated[
        list[str] | None, Query(description="key=value; repeat to require several")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    cursor: str | None = None,
) -> SandboxList:
    return await sandboxes.listing(
        principal, state=state, labels=_labels(label or []), limit=limit, cursor=cursor
    )


@router.get("/{sandbox_id}", name="get", responses=responses(404))
async def get_sandbox(
    sandbox_id: str, principal: PrincipalDep, sandboxes: SandboxesDep
) -> SandboxPublic:
    return await sandboxes.get(principal, sandbox_id)


@router.delete(
    "/{sandbox_id}",
    name="delete",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(404),
)
async def delete_sandbox(sandbox_id: str, principal: PrincipalDep, sandboxes: SandboxesDep) -> None:
    await sandboxes.delete(principal, sandbox_id)


@router.post("/{sandbox_id}/keepalive", name="keepalive", responses=responses(404, 409, 422))
async def keepalive_sandbox(
    sandbox_id: str, body: SandboxUpdate, principal: PrincipalDep, sandboxes: SandboxesDep
) -> SandboxPublic:
    return await sandboxes.keepalive(principal, sandbox_id, body)


@router.post(
    "/{sandbox_id}/fork",
    name="fork",
    status_code=status.HTTP_201_CREATED,
    responses=responses(404, 409, 422, 429, 500, 503),
)
async def fork_sandbox(
    sandbox_id: str,
    principal: PrincipalDep,
    sandboxes: SandboxesDep,
    body: ForkCreate | None = None,
) -> ForkList:
    return await sandboxes.fork(principal, sandbox_id, body or ForkCreate())


@router.post("/{sandbox_id}/hibernate", name="hibernate", responses=responses(404, 409, 500, 503))
async def hibernate_sandbox(
    sandbox_id: str, principal: PrincipalDep, sandboxes: SandboxesDep
) -> SandboxPublic:
    return await sandboxes.hibernate(principal, sandbox_id)


@router.post("/{sandbox_id}/resume", name="resume", responses=responses(404, 409, 429, 500, 503))
async def resume_sandbox(
    sandbox_id: str, principal: PrincipalDep, sandboxes: SandboxesDep
) -> SandboxPublic:
    return await sandboxes.resume(principal, sandbox_id)


@router.get("/{sandbox_id}/network", name="get-network", responses=responses(404))
async def get_network(
    sandbox_id: str, principal: PrincipalDep, sandboxes: SandboxesDep
) -> NetworkPublic:
    return await sandboxes.network(principal, sandbox_id)


@router.patch(
    "/{sandbox_id}/network", name="update-network", responses=responses(400, 404, 409, 422, 503)
)
async def update_network(
    sandbox_id: str, body: NetworkUpdate, principal: PrincipalDep, sandboxes: SandboxesDep
) -> NetworkPublic:
    return await sandboxes.update_network(principal, sandbox_id, body)


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"{pair!r} is not key=value", field="label")
        labels[key] = value
    return labels
