"""spec/api.md "Health": the one route without authentication."""

from __future__ import annotations

from fastapi import APIRouter

from isorun_backend.api.deps import HealthDep
from isorun_backend.models import Health

router = APIRouter(tags=["health"])


@router.get("/health", name="get")
async def get_health(health: HealthDep) -> Health:
    return health.check()
