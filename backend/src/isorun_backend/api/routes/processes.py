"""spec/api.md "Exec": the processes of a sandbox, and signals to them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from isorun_backend.api.deps import PrincipalDep, ProcessesDep
from isorun_backend.api.errors import responses
from isorun_backend.models import ProcessList, SignalCreate

router = APIRouter(
    prefix="/sandboxes/{sandbox_id}/processes", tags=["processes"], responses=responses(401)
)


@router.get("", name="list", responses=responses(404, 409))
async def list_processes(
    sandbox_id: str, principal: PrincipalDep, processes: ProcessesDep
) -> ProcessList:
    return await processes.listing(principal, sandbox_id)


@router.post(
    "/{pid}/signal",
    name="signal",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(404, 409, 422),
)
async def signal_process(
    sandbox_id: str,
    pid: Annotated[int, Path(ge=1)],
    body: SignalCreate,
    principal: PrincipalDep,
    processes: ProcessesDep,
) -> None:
    await processes.signal(principal, sandbox_id, pid, body.signal)
