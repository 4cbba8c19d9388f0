"""The only map from errors to HTTP: every error answer is RFC 9457 problem+json.

```
ServiceError (services.errors)      -> STATUS[code]
RequestValidationError (FastAPI)    -> 422 invalid_request, field errors; 400 for broken JSON
HTTPException (Starlette routing)   -> 404 not_found, 405 invalid_request, ...
ClientDisconnect (body cut short)   -> 400 invalid_request, logged as the client's doing
anything else                       -> 500 internal (logged with its traceback)
```

Every problem carries the request id in its body and in ``X-Request-ID``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from isorun_backend.api.middleware import REQUEST_ID_HEADER, request_id
from isorun_backend.models import Problem, QuotaDetail
from isorun_backend.services.errors import QuotaExceeded, SandboxNotRunning, ServiceError

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://isorun.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

# spec/api.md "Error codes": code -> (status, title).
CODES: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "Invalid request"),
    "unauthorized": (401, "Unauthorized"),
    "sandbox_not_found": (404, "Sandbox not found"),
    "snapshot_not_found": (404, "Snapshot not found"),
    "not_found": (404, "Not found"),
    "image_rejected": (422, "Image rejected"),
    "image_unavailable": (502, "Image unavailable"),
    "sandbox_not_running": (409, "Sandbox not running"),
    "conflict": (409, "Conflict"),
    "quota_exceeded": (429, "Quota exceeded"),
    "file_error": (400, "File operation failed"),
    "snapshot_failed": (500, "Snapshot failed"),
    "internal": (500, "Internal error"),
    "unavailable": (503, "Unavailable"),
}


def problem(
    request: Request,
    code: str,
    detail: str,
    *,
    status: int | None = None,
    errors: list[dict[str, Any]] | None = None,
    sandbox_id: str | None = None,
    state: str | None = None,
    quota: QuotaDetail | None = None,
) -> Problem:
    default_status, title = CODES[code]
    return Problem(
        type=PROBLEM_TYPE_BASE + code,
        title=title,
        status=status or default_status,
        detail=detail,
        code=code,
        request_id=request_id(request),
        errors=errors,
        sandbox_id=sandbox_id,
        state=state,
        quota=quota,
    )


def service_problem(request: Request, exc: ServiceError) -> Problem:
    quota = None
    if isinstance(exc, QuotaExceeded):
        quota = QuotaDetail.model_validate(
            {"limit": exc.limit, "max": exc.maximum, "used": exc.used, "requested": exc.requested}
        )
    state = exc.state if isinstance(exc, SandboxNotRunning) else None
    return problem(
        request, exc.code, exc.detail, sandbox_id=exc.sandbox_id, state=state, quota=quota
    )


def problem_response(request: Request, body: Problem) -> JSONResponse:
    headers = {REQUEST_ID_HEADER: body.request_id}
    if body.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=body.status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return problem_response(request, service_problem(request, exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_field_error(error) for error in exc.errors()]
    # A body that is not JSON at all is malformed (400); JSON with wrong values is 422.
    status = 400 if any(e["type"] == "json_invalid" for e in errors) else 422
    detail = "; ".join(
        f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors
    )
    body = problem(request, "invalid_request", detail, status=status, errors=errors)
    return problem_response(request, body)


def _field_error(error: Any) -> dict[str, Any]:
    location, *path = error["loc"]
    return {
        "field": ".".join(str(part) for part in path),
        "location": location,
        "message": error["msg"],
        "type": error["type"],
    }


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "invalid_request"
    if exc.status_code >= 500:
        code = "internal"
    body = problem(request, code, str(exc.detail), status=exc.status_code)
    response = problem_response(request, body)
    response.headers.update(exc.headers or {})
    return response


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    # Nobody will read this answer; the point is not to log a vanished client as our failure.
    log.info("client went away during %s %s", request.method, request.url.path)
    body = problem(request, "invalid_request", "the request body ended early")
    return problem_response(request, body)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    body = problem(request, "internal", "internal error; quote the request id when reporting it")
    return problem_response(request, body)


def install(app: FastAPI) -> None:
    """Register the handlers; routes and services then only raise."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected_error)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route can answer with."""
    return {status: {"model": Problem, "description": "a problem"} for status in statuses}
