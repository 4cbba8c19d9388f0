"""spec/api.md "Usage": the tenant's metered vCPU and memory time, and its price."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter

from isorun_backend.api.deps import PrincipalDep, UsageDep
from isorun_backend.api.errors import responses
from isorun_backend.models import UsageReport

router = APIRouter(prefix="/usage", tags=["usage"], responses=responses(401))


@router.get("", name="get", responses=responses(400, 422))
async def get_usage(
    principal: PrincipalDep,
    usage: UsageDep,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> UsageReport:
    return await usage.report(principal, since, until)
