"""spec/api.md "Exec": buffered JSON by default, NDJSON events with Accept: application/x-ndjson."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from isorun_backend.api.deps import ExecDep, PrincipalDep
from isorun_backend.api.errors import problem, responses, service_problem
from isorun_backend.models import ExecCreate, ExecEvent, ExecResult, Problem
from isorun_backend.services.errors import ServiceError

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"

router = APIRouter(prefix="/sandboxes/{sandbox_id}", tags=["exec"], responses=responses(401))


@router.post(
    "/exec",
    name="run",
    response_model=ExecResult,
    responses={
        200: {
            "description": f"ExecResult, or with Accept: {NDJSON} one event per line",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        **responses(400, 404, 409, 422),
    },
)
async def run_exec(
    sandbox_id: str,
    *,
    body: ExecCreate,
    request: Request,
    principal: PrincipalDep,
    exec_service: ExecDep,
    accept: Annotated[str, Header()] = "application/json",
) -> ExecResult | StreamingResponse:
    if NDJSON in accept:
        events = await exec_service.stream(principal, sandbox_id, body)
        return StreamingResponse(_ndjson(request, events), media_type=NDJSON)
    return await exec_service.run(principal, sandbox_id, body)


async def _ndjson(request: Request, events: AsyncIterator[ExecEvent]) -> AsyncIterator[bytes]:
    """One JSON object per line; a failure after the start is a last ``error`` line, because
    the status line has gone out already."""
    try:
        async for event in events:
            yield event.model_dump_json().encode() + b"\n"
    except ServiceError as exc:
        yield _error_line(service_problem(request, exc))
    except Exception:
        log.exception("exec stream failed")
        yield _error_line(problem(request, "internal", "the exec stream failed"))


def _error_line(body: Problem) -> bytes:
    line: dict[str, Any] = {"type": "error", **body.model_dump(exclude_none=True)}
    return json.dumps(line).encode() + b"\n"
