"""The isorun error tree, shaped by the request lifecycle.

```
IsorunError                                  .sandbox_id where one is involved
├── TransportError                           the request may not have reached the server
│   ├── TransportTimeout: ConnectTimeout · ReadTimeout · WriteTimeout · PoolTimeout
│   ├── NetworkError: ConnectError · ReadError · WriteError
│   └── ProtocolError                        the server's answer could not be parsed
├── APIError(status_code, code, request_id, detail)   a problem+json answer (spec/api.md)
│   ├── InvalidRequest                       400/422 invalid_request
│   │   └── ImageRejected                    422 image_rejected
│   ├── AuthenticationError                  401 unauthorized (also: no API key configured)
│   ├── Forbidden                            403 (a proxy in front; the API itself answers 404)
│   ├── NotFound                             404 not_found (files, processes, routes)
│   │   ├── SandboxNotFound                  404 sandbox_not_found
│   │   └── SnapshotNotFound                 404 snapshot_not_found
│   ├── Conflict                             409 conflict
│   │   └── SandboxStateError(state, required)   409 sandbox_not_running, also a SandboxError
│   ├── FileError                            400 file_error (the guest's error code in .detail)
│   ├── QuotaExceeded                        429 quota_exceeded
│   └── ServerError                          500 internal, other 5xx
│       ├── ServiceUnavailable               503 unavailable, 502/504 from a gateway (retryable)
│       ├── ImageUnavailable                 502 image_unavailable
│       └── SnapshotFailed                   500 snapshot_failed (a save or restore failed)
├── SandboxError
│   ├── SandboxStateError                    (see above)
│   ├── ExecFailed(result)                   exec(check=True) / ExecResult.check(): exit != 0
│   │   └── ExecTimeout                      ... because the exec's timeout_s ran out
│   └── OutcomeUnknown                       sent but not acknowledged: reconcile before any retry
├── TerminalError(output)                    an attached shell's connection (`sb.shells.attach`)
│   ├── TerminalClosed                       also an EOFError: the attach ended (shell exit, detach)
│   └── TerminalTimeout                      also a TimeoutError: recv / read_until waited too long
└── UsageError                               caller misuse (no API key, closed client, ...)
```

`retryable` is a class attribute: true only where repeating the same request is known to be
safe for an idempotent call (the connection was never made, or the server said "try again").
The client retries only idempotent calls (GET, DELETE and the create call, which carries an
`Idempotency-Key`), and only on retryable errors. Every `httpx` error is translated in
`isorun._base.translate_transport_errors`; none reaches users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from isorun._models import ExecResult


class IsorunError(Exception):
    """Base of every error the isorun SDK raises.

    Attributes:
        message: The message, also the exception's string.
        sandbox_id: The sandbox the failed call was about, where there is one.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, sandbox_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.sandbox_id = sandbox_id


class UsageError(IsorunError):
    """The SDK was called wrongly: {what}; nothing was sent."""


# --- transport -------------------------------------------------------------------------------


class TransportError(IsorunError):
    """The request failed below HTTP: {httpx error}; it may not have reached the server."""


class TransportTimeout(TransportError):
    """A timeout ran out before the exchange finished."""


class ConnectTimeout(TransportTimeout):
    """No connection within the connect timeout; nothing was sent."""

    retryable = True


class ReadTimeout(TransportTimeout):
    """The server did not answer within the read timeout."""


class WriteTimeout(TransportTimeout):
    """The request body could not be sent within the write timeout."""


class PoolTimeout(TransportTimeout):
    """No pooled connection became free within the pool timeout; nothing was sent."""

    retryable = True


class NetworkError(TransportError):
    """The connection failed."""


class ConnectError(NetworkError):
    """The connection could not be made (refused, DNS, TLS); nothing was sent."""

    retryable = True


class ReadError(NetworkError):
    """The connection broke while reading the answer."""


class WriteError(NetworkError):
    """The connection broke while sending the request."""


class ProtocolError(TransportError):
    """The server's answer could not be parsed: {what was wrong}."""


# --- API answers -----------------------------------------------------------------------------


class APIError(IsorunError):
    """The API answered {status_code} {code}: {detail}.

    Attributes:
        status_code: The HTTP status.
        code: The problem's `code` (spec/api.md "Error codes"), or None for a non-problem body.
        request_id: The server's `request_id` / `X-Request-ID`, to quote in bug reports.
        detail: The problem's `detail` (or the start of a non-problem body).
        errors: Field errors of a validation problem, as sent.
        problem: The whole problem+json object, as sent.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        detail: str | None = None,
        sandbox_id: str | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, sandbox_id=sandbox_id)
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.detail = detail
        self.problem: dict[str, Any] = problem or {}
        self.errors: list[Any] = list(self.problem.get("errors") or [])


class InvalidRequest(APIError):
    """The API refused the request as invalid (400/422 invalid_request)."""


class ImageRejected(InvalidRequest):
    """The image was refused: floating tag, bad reference, unsafe image or unknown short name."""


class AuthenticationError(APIError):
    """The API key is missing, unknown or revoked (401 unauthorized)."""


class Forbidden(APIError):
    """Something between the SDK and the API refused the request (403)."""


class NotFound(APIError):
    """The file, process or route does not exist (404 not_found)."""


class SandboxNotFound(NotFound):
    """The sandbox does not exist, was deleted, or belongs to another tenant (404)."""


class SnapshotNotFound(NotFound):
    """The snapshot does not exist, was deleted, or belongs to another tenant (404)."""


class Conflict(APIError):
    """The request conflicts with the current state of the object (409 conflict)."""


class FileError(APIError):
    """The guest refused the file operation; `detail` names its error code (400 file_error)."""


class QuotaExceeded(APIError):
    """The tenant's quota is used up (429 quota_exceeded)."""


class ServerError(APIError):
    """The server failed (500 internal or another 5xx)."""


class ServiceUnavailable(ServerError):
    """The server or a gateway in front of it asks to try again (502/503/504)."""

    retryable = True


class ImageUnavailable(ServerError):
    """The image's registry could not be reached or refused our credentials (502)."""


class SnapshotFailed(ServerError):
    """A save or restore failed: disk full, saved state missing or corrupt, or the node changed
    (500 snapshot_failed). Not retryable: a hibernated sandbox stays hibernated."""


# --- sandbox outcomes ------------------------------------------------------------------------


class SandboxError(IsorunError):
    """Something went wrong with the sandbox or a command in it."""


class SandboxStateError(Conflict, SandboxError):
    """The sandbox is {state}; the call requires it to be {required} (409 sandbox_not_running).

    Attributes:
        state: The sandbox's state as the server reported it (a `state` problem member), if it
            did.
        required: The state the call needs.
    """

    required: ClassVar[str] = "running"

    @property
    def state(self) -> str | None:
        """The sandbox's state as the server reported it, if it did."""
        state = self.problem.get("state")
        return state if isinstance(state, str) else None


class ExecFailed(SandboxError):
    """The command exited with {exit_code} (or was killed by signal {signal}).

    Attributes:
        result: The full result, output included.
    """

    def __init__(self, message: str, *, result: ExecResult, sandbox_id: str | None) -> None:
        super().__init__(message, sandbox_id=sandbox_id)
        self.result = result


class ExecTimeout(ExecFailed):
    """The command ran past its timeout_s and was killed.

    Attributes:
        result: The result, with the output produced before the timeout.
    """


class OutcomeUnknown(SandboxError):
    """{call} was sent but its answer was lost: it may or may not have taken effect.

    Raised for calls that are never retried (exec, file writes) when the transport fails after
    the request may have reached the server. Look at the sandbox before trying again. The
    transport error is the `__cause__`.
    """


# --- attached shells -------------------------------------------------------------------------


class TerminalError(IsorunError):
    """An attached shell's connection could not give what was asked.

    Attributes:
        output: The terminal output `read_until` read before it failed (empty from `recv`).
    """

    def __init__(self, message: str, *, output: bytes = b"", sandbox_id: str | None = None) -> None:
        super().__init__(message, sandbox_id=sandbox_id)
        self.output = output


class TerminalClosed(TerminalError, EOFError):
    """The attach has ended: the shell exited (its exit is `Terminal.exit`), or it was closed."""


class TerminalTimeout(TerminalError, TimeoutError):
    """`recv` or `read_until` waited its `timeout` out; the connection is still usable."""
