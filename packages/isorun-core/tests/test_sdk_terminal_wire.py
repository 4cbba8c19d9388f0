"""The attach WebSocket's URL and close codes (spec/api.md "Shells"), without a server: the close
codes a healthy test backend never sends (401, 409, a broken node) map to the SDK's errors."""

from __future__ import annotations

import pytest
from isorun import (
    AuthenticationError,
    Client,
    IsorunError,
    NotFound,
    ReadError,
    SandboxNotFound,
    SandboxStateError,
    ServerError,
    ServiceUnavailable,
    UsageError,
)
from isorun._terminal_wire import closed_error
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close


def closed(code: int, reason: str = "") -> ConnectionClosedError:
    return ConnectionClosedError(Close(code, reason), None)


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (4404, "no shell 'sh-0123456789ab'", NotFound),
        (4404, "no sandbox 'sb-1'", SandboxNotFound),
        (4409, "sandbox sb-1 is stopped", SandboxStateError),
        (4401, "unknown key", AuthenticationError),
        (4503, "node n1 does not answer", ServiceUnavailable),
        (1011, "internal error", ServerError),
        (4404, '{"code": "sandbox_not_found", "detail": "no sandbox"}', SandboxNotFound),
    ],
)
def test_a_refusal_is_the_error_of_its_http_status(
    code: int, reason: str, error: type[IsorunError]
) -> None:
    found = closed_error(closed(code, reason), sandbox_id="sb-1")
    assert type(found) is error
    assert found.sandbox_id == "sb-1"


def test_a_normal_close_is_no_error_and_a_missing_close_frame_is_a_broken_connection() -> None:
    assert closed_error(ConnectionClosedOK(Close(1000, ""), None), sandbox_id="sb-1") is None
    assert isinstance(closed_error(ConnectionClosedError(None, None), sandbox_id="sb"), ReadError)


@pytest.mark.parametrize(
    ("api_url", "url"),
    [
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/v1/x?write=true"),
        ("https://api.example/prefix", "wss://api.example/prefix/v1/x?write=true"),
    ],
)
def test_the_websocket_url_follows_the_api_url(api_url: str, url: str) -> None:
    with Client(api_url=api_url) as client:
        target = client.websocket_target("/v1/x", {"write": "true"})
    assert target.url == url
    assert target.headers["Authorization"].startswith("Bearer ")
    # wss uses the client's TLS context (the one its httpx client verifies with).
    assert (target.ssl is not None) == url.startswith("wss:")


def test_an_api_url_that_is_not_http_cannot_open_one() -> None:
    with Client(api_url="ftp://x") as client, pytest.raises(UsageError):
        client.websocket_target("/v1/x", {})
