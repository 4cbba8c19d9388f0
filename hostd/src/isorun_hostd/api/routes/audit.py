"""The node's audit chain: a sandbox's entries (also once it is gone), and a verification."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from isorun_hostd.api.deps import RuntimeDep
from isorun_hostd.api.models import NodeAuditList, NodeAuditReport
from isorun_hostd.audit.chain import MAX_PAGE

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", name="list")
async def listing(
    runtime: RuntimeDep,
    sandbox_id: str | None = None,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
) -> NodeAuditList:
    entries = await asyncio.to_thread(runtime.audit.entries, sandbox_id, after=after, limit=limit)
    return NodeAuditList.page(entries, limit)


@router.get("/verify", name="verify")
async def verify(runtime: RuntimeDep) -> NodeAuditReport:
    return NodeAuditReport.from_report(await asyncio.to_thread(runtime.audit.verify))
