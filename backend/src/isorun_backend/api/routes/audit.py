"""spec/api.md "Audit": a sandbox's audit entries, and a verification of every node's chain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from isorun_backend.api.deps import AuditDep, PrincipalDep
from isorun_backend.api.errors import responses
from isorun_backend.models import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, AuditList, AuditReport

router = APIRouter(tags=["audit"], responses=responses(401))


@router.get("/sandboxes/{sandbox_id}/audit", name="list", responses=responses(400, 404, 503))
async def list_audit(
    sandbox_id: str,
    principal: PrincipalDep,
    *,
    audit: AuditDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    cursor: str | None = None,
) -> AuditList:
    return await audit.listing(principal, sandbox_id, limit=limit, cursor=cursor)


@router.get("/audit/verify", name="verify", responses=responses(503))
async def verify_audit(_principal: PrincipalDep, audit: AuditDep) -> AuditReport:
    return await audit.verify()
