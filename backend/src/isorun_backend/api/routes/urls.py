"""spec/api.md "URLs": signed URLs to a port of a sandbox, served by the edge."""

from __future__ import annotations

from fastapi import APIRouter, status

from isorun_backend.api.deps import PrincipalDep, UrlsDep
from isorun_backend.api.errors import responses
from isorun_backend.models import UrlCreate, UrlPublic

router = APIRouter(prefix="/sandboxes/{sandbox_id}/urls", tags=["urls"], responses=responses(401))


@router.post(
    "", name="create", status_code=status.HTTP_201_CREATED, responses=responses(404, 409, 422)
)
async def create_url(
    sandbox_id: str, body: UrlCreate, principal: PrincipalDep, urls: UrlsDep
) -> UrlPublic:
    return await urls.create(principal, sandbox_id, body)
