"""What `Terminal` and `AsyncTerminal` share: the attach WebSocket's frames and errors, no I/O.

```
GET /v1/sandboxes/{id}/shells/{shell_id}/attach?write=&scrollback=   (spec/api.md "Shells")
server -> client   text {"type": "start", ...} first; binary frames: terminal output;
                   text skipped / writer / resize / exit; close 1000 after exit
client -> server   binary frames: input; text {"type": "resize"} / {"type": "signal"}
refusal            close 4000 + HTTP status before start, the problem's detail as reason;
                   1011: a broken node
```
`websockets` exceptions are turned into the SDK's errors here, as `_base` does for httpx's.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)
from websockets.frames import CloseCode

from isorun._base import error_from_problem
from isorun._errors import (
    APIError,
    ConnectError,
    ConnectTimeout,
    IsorunError,
    ProtocolError,
    ReadError,
    UsageError,
)
from isorun._models import ShellEvent, ShellExit, ShellResized, ShellSkipped, ShellWriter

Pattern = bytes | str | re.Pattern[bytes]
"""What `read_until` waits for: a literal (text as UTF-8) or a compiled bytes regex."""
SIGNAL_TARGETS = ("foreground", "shell")
_REFUSAL_BASE = 4000
_EVENTS: dict[str, type[BaseModel]] = {
    "skipped": ShellSkipped,
    "writer": ShellWriter,
    "resize": ShellResized,
    "exit": ShellExit,
}


@dataclass(frozen=True)
class WebSocketTarget:
    """Where and how a client opens a WebSocket: its settings, as its httpx client has them.

    Attributes:
        ssl: The client's TLS context for `wss://`, None for `ws://`.
        open_timeout: Seconds for the handshake and the `start` frame (None: no limit).
    """

    url: str
    headers: Mapping[str, str]
    ssl: ssl.SSLContext | None
    open_timeout: float | None


def websocket_url(api_url: str, path: str, params: Mapping[str, str]) -> str:
    """`path` under the API's base URL, `http` -> `ws` and `https` -> `wss`.

    Raises:
        UsageError: The API URL is neither http nor https.
    """
    parts = urlsplit(api_url)
    schemes = {"http": "ws", "https": "wss"}
    if parts.scheme not in schemes:
        raise UsageError(f"cannot attach through {api_url!r}: the API URL must be http or https")
    return urlunsplit(
        (schemes[parts.scheme], parts.netloc, parts.path + path, urlencode(params), "")
    )


def attach_params(*, write: bool, scrollback: bool) -> dict[str, str]:
    return {"write": _bool(write), "scrollback": _bool(scrollback)}


def _bool(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True)
class Start:
    """The first frame of an attach: the shell as this client joins it."""

    pid: int
    cols: int
    rows: int
    writer: bool


def parse_start(frame: str | bytes, *, sandbox_id: str) -> Start:
    """Raises: ProtocolError, for anything but a start frame."""
    message = _json(frame, sandbox_id) if isinstance(frame, str) else None
    if message is None or message.get("type") != "start":
        raise ProtocolError(
            f"the attach began with {frame[:80]!r}, not start", sandbox_id=sandbox_id
        )
    try:
        return Start(
            pid=int(message["pid"]),
            cols=int(message["cols"]),
            rows=int(message["rows"]),
            writer=bool(message["writer"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"a malformed start frame: {message}", sandbox_id=sandbox_id) from exc


def parse_event(frame: str, *, sandbox_id: str) -> ShellEvent | None:
    """The event of a text frame; None for a type this SDK does not know (a newer server's).

    Raises:
        ProtocolError: The frame is not JSON, or a known event is malformed.
    """
    message = _json(frame, sandbox_id)
    model = _EVENTS.get(str(message.get("type")))
    if model is None:
        return None
    try:
        event: ShellEvent = model.model_validate(message)  # type: ignore[assignment]
    except ValidationError as exc:
        raise ProtocolError(f"a malformed {model.__name__}: {exc}", sandbox_id=sandbox_id) from exc
    return event


def _json(frame: str, sandbox_id: str) -> dict[str, Any]:
    try:
        message = json.loads(frame)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"a text frame that is not JSON: {frame[:80]!r}", sandbox_id=sandbox_id
        ) from exc
    if not isinstance(message, dict):
        raise ProtocolError(
            f"a text frame that is not an object: {frame[:80]!r}", sandbox_id=sandbox_id
        )
    return message


def resize_frame(cols: int, rows: int) -> str:
    return json.dumps({"type": "resize", "cols": cols, "rows": rows})


def signal_frame(signal: int, target: str) -> str:
    """Raises: UsageError, for a target the API does not know."""
    check_target(target)
    return json.dumps({"type": "signal", "signal": int(signal), "target": target})


def check_target(target: str) -> None:
    """Raises: UsageError, for a signal target the API does not know."""
    if target not in SIGNAL_TARGETS:
        raise UsageError(f"a shell signal's target is 'foreground' or 'shell', not {target!r}")


def input_bytes(data: bytes | str) -> bytes:
    """Input as the terminal takes it: text as UTF-8."""
    return data.encode() if isinstance(data, str) else bytes(data)


def find(buffer: bytes, pattern: Pattern) -> int:
    """The end of the first match of `pattern` in `buffer`, or -1."""
    if isinstance(pattern, re.Pattern):
        match = pattern.search(buffer)
        return -1 if match is None else match.end()
    needle = input_bytes(pattern)
    at = buffer.find(needle)
    return -1 if at < 0 else at + len(needle)


# --- errors ----------------------------------------------------------------------------------


def closed_error(exc: ConnectionClosed, *, sandbox_id: str) -> IsorunError | None:
    """The error a close stands for; None for a normal close (the shell's end, a detach).

    4000 + N is the API's refusal with HTTP status N, its reason the problem's detail (a node
    sends `{"code", "detail"}` JSON there, spec/node.md, also understood); 1011 is a broken
    node; a close without a close frame is a broken connection.
    """
    frame = exc.rcvd
    if frame is None:
        return ReadError(f"the attach connection broke: {exc}", sandbox_id=sandbox_id)
    if frame.code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
        return None
    if frame.code == CloseCode.INTERNAL_ERROR:
        return error_from_problem(
            {"code": "internal", "detail": frame.reason or "the node failed"},
            status_code=500,
            sandbox_id=sandbox_id,
        )
    if _REFUSAL_BASE <= frame.code < _REFUSAL_BASE + 600:
        status = frame.code - _REFUSAL_BASE
        return error_from_problem(
            _refusal(status, frame.reason), status_code=status, sandbox_id=sandbox_id
        )
    return ProtocolError(
        f"the attach was closed with {frame.code}: {frame.reason}", sandbox_id=sandbox_id
    )


def _refusal(status: int, reason: str) -> dict[str, Any]:
    """A problem object for a refusal's close reason."""
    try:
        sent = json.loads(reason)
    except json.JSONDecodeError:
        sent = None
    if isinstance(sent, dict):
        return {**sent, "status": status}
    # The API sends only the detail: the status's usual code stands in for the missing one.
    code = {401: "unauthorized", 409: "sandbox_not_running"}.get(status)
    if status == 404:
        # One status for two things here: the shell (not_found) or its sandbox.
        lowered = reason.lower()
        code = (
            "not_found" if "shell" in lowered or "sandbox" not in lowered else "sandbox_not_found"
        )
    return {"status": status, "code": code, "detail": reason}


def handshake_error(exc: Exception, *, sandbox_id: str) -> IsorunError:
    """The error for a failed opening: refused by HTTP status, unreachable, or not a WebSocket."""
    if isinstance(exc, InvalidStatus):
        return _status_error(exc, sandbox_id)
    if isinstance(exc, InvalidURI):
        return UsageError(f"cannot attach: {exc}", sandbox_id=sandbox_id)
    if isinstance(exc, TimeoutError):
        return ConnectTimeout(f"attach: no answer in time: {exc}", sandbox_id=sandbox_id)
    if isinstance(exc, InvalidHandshake | WebSocketException):
        return ProtocolError(f"attach: not a WebSocket answer: {exc}", sandbox_id=sandbox_id)
    return ConnectError(f"attach: {type(exc).__name__}: {exc}", sandbox_id=sandbox_id)


def _status_error(exc: InvalidStatus, sandbox_id: str) -> APIError:
    response = exc.response
    try:
        problem = json.loads(response.body or b"")
    except (json.JSONDecodeError, UnicodeDecodeError):
        problem = None
    if not isinstance(problem, dict):
        problem = {"detail": (response.body or b"").decode(errors="replace").strip()[:200]}
    return error_from_problem(
        problem,
        status_code=response.status_code,
        request_id=response.headers.get("x-request-id"),
        sandbox_id=sandbox_id,
    )


@contextmanager
def translate_opening(sandbox_id: str) -> Iterator[None]:
    """Turn what opening the WebSocket raises into the SDK's errors (see `handshake_error`)."""
    try:
        yield
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise handshake_error(exc, sandbox_id=sandbox_id) from exc
