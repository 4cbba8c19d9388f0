"""What `Client` and `AsyncClient` share: everything about a call that is not I/O.

A call is described by an `ApiRequest` (built per route in `_routes`), sent by a client that
owns the httpx client, and turned back into a model or an `APIError` here:

```
_routes.<route>(...) -> ApiRequest ─┬─> Client.send / AsyncClient.send (I/O, retries)
                                    │       │  httpx errors -> translate_transport_errors()
                                    │       └> httpx.Response
                                    └─> error_from_response() / parse_model()
```

The exec stream's NDJSON decoding lives beside this, in `_ndjson`; the create's `network` member
(`Secret`, `network_body`) is built here too.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import os
import ssl
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, Field, ValidationError

from isorun._errors import (
    APIError,
    AuthenticationError,
    Conflict,
    ConnectError,
    ConnectTimeout,
    FileError,
    Forbidden,
    ImageRejected,
    ImageUnavailable,
    InvalidRequest,
    IsorunError,
    NetworkError,
    NotFound,
    OutcomeUnknown,
    PoolTimeout,
    ProtocolError,
    QuotaExceeded,
    ReadError,
    ReadTimeout,
    SandboxNotFound,
    SandboxStateError,
    ServerError,
    ServiceUnavailable,
    SnapshotFailed,
    SnapshotNotFound,
    TransportError,
    TransportTimeout,
    UsageError,
    WriteError,
    WriteTimeout,
)

logger = logging.getLogger("isorun")

USER_AGENT = f"isorun-python/{metadata.version('isorun')}"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
"""Retries after the first attempt: three attempts in all."""
DEFAULT_RETRY_BACKOFF_S = 0.5
"""First backoff; it doubles per retry (capped at 8 s) and gets up to as much again in jitter."""
RETRY_BACKOFF_MAX_S = 8.0

M = TypeVar("M", bound=BaseModel)
RequestContent = bytes | Iterable[bytes] | AsyncIterable[bytes]


class UseClientDefault(enum.Enum):
    """Type of `USE_CLIENT_DEFAULT`: "the client's setting" where None would mean "none"."""

    USE_CLIENT_DEFAULT = "USE_CLIENT_DEFAULT"


USE_CLIENT_DEFAULT = UseClientDefault.USE_CLIENT_DEFAULT
TimeoutArg = httpx.Timeout | float | None | UseClientDefault
"""A timeout argument: seconds, an `httpx.Timeout`, None for none, or the client's default."""


class ClientState(enum.Enum):
    """A client's life: UNOPENED -> OPENED (first request or `with`) -> CLOSED (for good)."""

    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


@dataclass(frozen=True)
class ApiRequest:
    """One call to the API, before any I/O.

    Attributes:
        idempotent: Safe to repeat: only these calls are retried.
        what: A short name of the call for messages ("exec", "create sandbox").
        timeout: Per-call timeout; `USE_CLIENT_DEFAULT` for the client's.
        sandbox_id: The sandbox the call is about, copied onto its errors.
    """

    method: str
    path: str
    what: str
    idempotent: bool
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    content: RequestContent | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: httpx.Timeout | UseClientDefault | None = USE_CLIENT_DEFAULT
    sandbox_id: str | None = None

    def with_param(self, name: str, value: str) -> ApiRequest:
        """This request with query parameter `name` set to `value` (replacing it)."""
        params = (*(p for p in self.params if p[0] != name), (name, value))
        return replace(self, params=params)


class ClientLease:
    """Who closes a sandbox's client: nobody (one passed as `client=`), or the last of the
    sandboxes sharing a client one of them made (a fork's clones share their source's).

    Each holder calls `release()` once; it answers True for the holder that must close it.
    """

    def __init__(self, *, owned: bool) -> None:
        self.owned = owned
        self.holders = 1

    def share(self) -> ClientLease:
        """This lease with one more holder."""
        self.holders += 1
        return self

    def release(self) -> bool:
        self.holders -= 1
        return self.owned and self.holders == 0


def client_headers(api_key: str) -> dict[str, str]:
    """Headers every request of a client carries."""
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}


def ssl_context() -> ssl.SSLContext:
    """The TLS settings httpx would build for a new client (certifi, or `SSL_CERT_FILE` /
    `SSL_CERT_DIR`), built once per process and shared by every client.

    httpx builds a fresh context in each client's constructor, loading the CA bundle: ~20 ms,
    which `Sandbox.create(api_key=...)` (a client per sandbox) paid on every create, even for
    a plain-HTTP API. A context is immutable once built and safe to share between clients and
    threads; changing those variables later builds a new one.
    """
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _ssl_context(_cafile: str | None, _capath: str | None) -> ssl.SSLContext:
    # The arguments are only the cache key: httpx reads the same variables itself.
    return httpx.create_ssl_context()


def build_request(http: httpx.Client | httpx.AsyncClient, req: ApiRequest) -> httpx.Request:
    """The httpx request for `req` (built once, so its retries send the same headers)."""
    return http.build_request(
        req.method,
        req.path,
        params=req.params,
        json=req.json,
        content=req.content,
        headers=req.headers,
        timeout=httpx.USE_CLIENT_DEFAULT if req.timeout is USE_CLIENT_DEFAULT else req.timeout,
    )


def should_retry(exc: BaseException) -> bool:
    """True for errors whose class says that repeating an idempotent call is safe."""
    return isinstance(exc, IsorunError) and exc.retryable


# --- transport errors ------------------------------------------------------------------------

# Checked in order: subclasses before their bases.
_TRANSPORT_ERRORS: tuple[tuple[type[Exception], type[IsorunError]], ...] = (
    (httpx.ConnectTimeout, ConnectTimeout),
    (httpx.ReadTimeout, ReadTimeout),
    (httpx.WriteTimeout, WriteTimeout),
    (httpx.PoolTimeout, PoolTimeout),
    (httpx.TimeoutException, TransportTimeout),
    (httpx.ConnectError, ConnectError),
    (httpx.ReadError, ReadError),
    (httpx.WriteError, WriteError),
    (httpx.NetworkError, NetworkError),
    (httpx.UnsupportedProtocol, UsageError),
    (httpx.ProtocolError, ProtocolError),
    (httpx.DecodingError, ProtocolError),
    (httpx.TooManyRedirects, ProtocolError),
    (httpx.TransportError, TransportError),
    (httpx.StreamError, UsageError),
    (httpx.InvalidURL, UsageError),
)


@contextmanager
def translate_transport_errors(req: ApiRequest) -> Iterator[None]:
    """Turn any httpx error raised inside into the isorun error for it, chained.

    For a call that is never retried, a transport failure after the request may have reached
    the server becomes `OutcomeUnknown` (the translated error is its `__cause__`).

    Raises:
        TransportError: A subclass, for a failed exchange.
        OutcomeUnknown: A non-idempotent call may have taken effect.
        UsageError: httpx refused the request itself (bad URL scheme, body already consumed).
    """
    try:
        yield
    except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL) as exc:
        cls = next(ours for theirs, ours in _TRANSPORT_ERRORS if isinstance(exc, theirs))
        error = cls(f"{req.what}: {type(exc).__name__}: {exc}", sandbox_id=req.sandbox_id)
        if req.idempotent or not isinstance(error, TransportError) or error.retryable:
            raise error from exc
        error.__cause__ = exc
        raise OutcomeUnknown(
            f"{req.what} was sent but its answer was lost ({type(exc).__name__}); it may have "
            "taken effect: check the sandbox before trying again",
            sandbox_id=req.sandbox_id,
        ) from error


# --- API errors ------------------------------------------------------------------------------

_CODE_ERRORS: dict[str, type[APIError]] = {
    "invalid_request": InvalidRequest,
    "unauthorized": AuthenticationError,
    "sandbox_not_found": SandboxNotFound,
    "snapshot_not_found": SnapshotNotFound,
    "snapshot_failed": SnapshotFailed,
    "not_found": NotFound,
    "image_rejected": ImageRejected,
    "image_unavailable": ImageUnavailable,
    "sandbox_not_running": SandboxStateError,
    "conflict": Conflict,
    "quota_exceeded": QuotaExceeded,
    "file_error": FileError,
    "internal": ServerError,
    "unavailable": ServiceUnavailable,
}
_STATUS_ERRORS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: QuotaExceeded,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def error_from_problem(
    problem: Mapping[str, Any],
    *,
    status_code: int,
    request_id: str | None = None,
    sandbox_id: str | None = None,
) -> APIError:
    """The typed error for an RFC 9457 problem object (spec/api.md "Error codes").

    The problem's `code` picks the class; an unknown or missing code falls back on the status.
    """
    code = problem.get("code")
    code = code if isinstance(code, str) else None
    status = problem.get("status")
    status_code = status if isinstance(status, int) else status_code
    detail = str(problem.get("detail") or problem.get("title") or "")
    request_id = _str_or(problem.get("request_id"), request_id)
    sandbox_id = _str_or(problem.get("sandbox_id"), sandbox_id)
    cls = _CODE_ERRORS.get(code or "") or _class_for_status(status_code)
    message = f"{status_code} {code or 'error'}: {detail}" if detail else f"{status_code} {code}"
    if request_id:
        message += f" (request {request_id})"
    return cls(
        message,
        status_code=status_code,
        code=code,
        request_id=request_id,
        detail=detail or None,
        sandbox_id=sandbox_id,
        problem=dict(problem),
    )


def error_from_response(response: httpx.Response, *, sandbox_id: str | None) -> APIError:
    """The typed error for an error response whose body has been read.

    A body that is not a problem object (a proxy's HTML page, a bare 500) still gives the
    error class of its status, with the start of the body as `detail`.
    """
    request_id = response.headers.get("x-request-id")
    try:
        problem = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        problem = None
    if not isinstance(problem, dict):
        text = response.text.strip()[:200] or response.reason_phrase
        problem = {"detail": text}
    return error_from_problem(
        problem, status_code=response.status_code, request_id=request_id, sandbox_id=sandbox_id
    )


def _class_for_status(status_code: int) -> type[APIError]:
    if status_code in _STATUS_ERRORS:
        return _STATUS_ERRORS[status_code]
    return ServerError if status_code >= 500 else APIError


def _str_or(value: object, default: str | None) -> str | None:
    return value if isinstance(value, str) and value else default


# --- network (spec/api.md "Network") ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Secret:
    """A credential the sandbox may use but never read: sent to `upstream` by the host's proxy.

    Attributes:
        name: The guest's environment variable (`[A-Z_][A-Z0-9_]*`); it holds a placeholder.
        value: The credential. Sent once, to the API; never shown in `repr` or by the API.
        upstream: The https base URL the value may go to, and nowhere else.
        header: The header the proxy sends, `{value}` filled in.
        base_url_env: An environment variable the guest gets set to the proxy's route for
            `upstream` (`OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL`), for clients that take one.

    Example:
        >>> Secret(name="OPENAI_API_KEY", value="sk-...", upstream="https://api.openai.com/v1",
        ...        base_url_env="OPENAI_BASE_URL")  # doctest: +SKIP
    """

    name: str
    value: str = field(repr=False)
    upstream: str
    header: str = "Authorization: Bearer {value}"
    base_url_env: str | None = None


SecretArg = Secret | Mapping[str, str | None]
"""A `Secret`, or a dict of its fields (`{"name": ..., "value": ..., "upstream": ...}`)."""


def as_secret(secret: SecretArg) -> Secret:
    """Raises: UsageError, for a dict with unknown or missing fields."""
    if isinstance(secret, Secret):
        return secret
    try:
        return Secret(**secret)  # type: ignore[arg-type]  # the fields are checked right here
    except TypeError as exc:
        raise UsageError(
            f"a secret needs name, value and upstream (header, base_url_env optional): {exc}"
        ) from exc


def policy_body(
    *, profile: str | None, allow: Sequence[str] | None, deny: Sequence[str] | None
) -> dict[str, object]:
    """The egress policy fields given, as the API takes them (PATCH: only these change).

    Raises:
        UsageError: `allow` or `deny` is a string, which would be read as its letters.
    """
    if isinstance(allow, str) or isinstance(deny, str):
        raise UsageError("allow and deny are lists: allow=['pypi.org'], not allow='pypi.org'")
    body: dict[str, object] = {}
    if profile is not None:
        body["profile"] = profile
    if allow is not None:
        body["allow"] = list(allow)
    if deny is not None:
        body["deny"] = list(deny)
    return body


def network_body(
    *,
    profile: str | None,
    allow: Sequence[str] | None,
    deny: Sequence[str] | None,
    secrets: Sequence[SecretArg] | None,
) -> dict[str, object] | None:
    """A create's `network` member, or None when no network option was given (no egress).

    Raises:
        UsageError: As `policy_body`, or a secret dict with unknown or missing fields.
    """
    if profile is None and allow is None and deny is None and not secrets:
        return None
    body = policy_body(profile=profile, allow=allow, deny=deny)
    if secrets:
        body["secrets"] = [
            {k: v for k, v in asdict(as_secret(s)).items() if v is not None} for s in secrets
        ]
    return body


# --- answers ---------------------------------------------------------------------------------


class Page(BaseModel, Generic[M]):
    """A list answer: `{"data": [...], "next_cursor": str | null}` (spec/api.md Conventions)."""

    data: list[M] = Field(default_factory=list)
    next_cursor: str | None = None


def parse_model(model: type[M], response: httpx.Response) -> M:
    """Validate a JSON answer into `model`.

    Raises:
        ProtocolError: The body is not JSON or does not fit the model.
    """
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise ProtocolError(
            f"unexpected answer to {response.request.method} {response.request.url.path}: {exc}"
        ) from exc


def next_page(req: ApiRequest, page: Page[Any]) -> ApiRequest | None:
    """The request for the page after `page`, or None at the end."""
    return None if page.next_cursor is None else req.with_param("cursor", page.next_cursor)


def exec_timeout(base: httpx.Timeout, timeout_s: float | None) -> httpx.Timeout:
    """The HTTP timeout for an exec: the client's read timeout plus the command's.

    A command with no timeout gets no read timeout either: it may legitimately run (and stay
    silent) until the sandbox's own TTL ends it.
    """
    read = None if timeout_s is None or base.read is None else base.read + timeout_s
    return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)


def own_client_timeout(
    client: object,
    *,
    api_key: str | None,
    api_url: str | None,
    transport: object,
    timeout: TimeoutArg,
) -> httpx.Timeout | float | None:
    """Check a sandbox's connection arguments; return the timeout for a client of its own.

    Connection options configure the client a sandbox builds for itself, so they make no
    sense beside `client=`.

    Raises:
        UsageError: `client=` was given together with a connection option.
    """
    given = [
        name
        for name, value in (("api_key", api_key), ("api_url", api_url), ("transport", transport))
        if value is not None
    ]
    if timeout is not USE_CLIENT_DEFAULT:
        given.append("timeout")
    if client is not None and given:
        raise UsageError(f"pass {', '.join(given)} to the client, not beside client=")
    return DEFAULT_TIMEOUT if timeout is USE_CLIENT_DEFAULT else timeout
