"""Error mapping: every problem code of spec/api.md, bodies that are not problems, httpx errors."""

from __future__ import annotations

import httpx
import isorun
import pytest
import respx
from isorun import Client, Sandbox


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "invalid_request", isorun.InvalidRequest),
        (422, "invalid_request", isorun.InvalidRequest),
        (401, "unauthorized", isorun.AuthenticationError),
        (404, "sandbox_not_found", isorun.SandboxNotFound),
        (404, "not_found", isorun.NotFound),
        (422, "image_rejected", isorun.ImageRejected),
        (502, "image_unavailable", isorun.ImageUnavailable),
        (409, "sandbox_not_running", isorun.SandboxStateError),
        (409, "conflict", isorun.Conflict),
        (429, "quota_exceeded", isorun.QuotaExceeded),
        (400, "file_error", isorun.FileError),
        (500, "internal", isorun.ServerError),
        (503, "unavailable", isorun.ServiceUnavailable),
    ],
)
def test_each_problem_code_maps_to_its_error(
    api: respx.MockRouter, status: int, code: str, error: type[isorun.APIError]
) -> None:
    problem = {
        "type": f"https://isorun.dev/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": f"the {code} detail",
        "code": code,
        "request_id": "req-42",
        "sandbox_id": "sb-9",
    }
    route = api.get("/v1/sandboxes/sb-9").respond(
        status, json=problem, headers={"Content-Type": "application/problem+json"}
    )
    with pytest.raises(error) as info:
        Sandbox.connect("sb-9", client=Client(max_retries=0))
    exc = info.value
    assert type(exc) is error
    assert (exc.status_code, exc.code, exc.request_id) == (status, code, "req-42")
    assert (exc.detail, exc.sandbox_id) == (f"the {code} detail", "sb-9")
    assert str(exc) == f"{status} {code}: the {code} detail (request req-42)"
    assert route.call_count == 1


def test_retryable_is_a_class_attribute() -> None:
    assert isorun.ServiceUnavailable.retryable
    assert isorun.ConnectError.retryable
    assert not isorun.ServerError.retryable
    assert not isorun.ImageUnavailable.retryable
    assert not isorun.ReadTimeout.retryable


def test_validation_problem_keeps_its_field_errors(api: respx.MockRouter) -> None:
    errors = [{"loc": ["body", "vcpus"], "msg": "must be <= 16"}]
    api.post("/v1/sandboxes").respond(
        422, json={"code": "invalid_request", "detail": "bad", "errors": errors}
    )
    with pytest.raises(isorun.InvalidRequest) as info:
        Sandbox(vcpus=99)
    assert info.value.errors == errors


def test_sandbox_state_error_carries_state_and_required(api: respx.MockRouter) -> None:
    api.get("/v1/sandboxes/sb-1").respond(
        409, json={"code": "sandbox_not_running", "detail": "stopped", "state": "stopped"}
    )
    with pytest.raises(isorun.SandboxStateError) as info:
        Sandbox.connect("sb-1")
    assert (info.value.state, info.value.required) == ("stopped", "running")
    assert isinstance(info.value, isorun.SandboxError)
    assert isinstance(info.value, isorun.Conflict)


def test_a_non_json_500_is_a_server_error_with_the_body_as_detail(api: respx.MockRouter) -> None:
    api.get("/v1/sandboxes/sb-1").respond(
        500, text="<html>upstream exploded</html>", headers={"X-Request-ID": "req-h"}
    )
    with pytest.raises(isorun.ServerError) as info:
        Sandbox.connect("sb-1")
    assert info.value.detail == "<html>upstream exploded</html>"
    assert (info.value.code, info.value.request_id) == (None, "req-h")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, isorun.AuthenticationError),
        (403, isorun.Forbidden),
        (404, isorun.NotFound),
        (429, isorun.QuotaExceeded),
        (504, isorun.ServiceUnavailable),
        (507, isorun.ServerError),
        (418, isorun.APIError),
    ],
)
def test_a_body_without_a_code_falls_back_on_the_status(
    api: respx.MockRouter, status: int, error: type[isorun.APIError]
) -> None:
    api.get("/v1/sandboxes/sb-1").respond(status, text="")
    with pytest.raises(error) as info:
        Sandbox.connect("sb-1", client=Client(max_retries=0))
    assert type(info.value) is error
    assert info.value.status_code == status


def test_401_says_what_to_do(api: respx.MockRouter) -> None:
    api.post("/v1/sandboxes").respond(
        401, json={"code": "unauthorized", "status": 401, "detail": "unknown API key"}
    )
    with pytest.raises(isorun.AuthenticationError, match="401 unauthorized: unknown API key"):
        Sandbox()


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (httpx.ConnectError("refused"), isorun.ConnectError),
        (httpx.ConnectTimeout("slow"), isorun.ConnectTimeout),
        (httpx.ReadTimeout("slow"), isorun.ReadTimeout),
        (httpx.WriteTimeout("slow"), isorun.WriteTimeout),
        (httpx.PoolTimeout("busy"), isorun.PoolTimeout),
        (httpx.ReadError("reset"), isorun.ReadError),
        (httpx.WriteError("reset"), isorun.WriteError),
        (httpx.RemoteProtocolError("garbage"), isorun.ProtocolError),
        (httpx.UnsupportedProtocol("ftp"), isorun.UsageError),
    ],
)
def test_httpx_errors_are_translated_and_chained(
    api: respx.MockRouter, raised: Exception, error: type[isorun.IsorunError]
) -> None:
    api.get("/v1/sandboxes/sb-1").mock(side_effect=raised)
    with pytest.raises(error) as info:
        Sandbox.connect("sb-1", client=Client(max_retries=0))
    assert type(info.value) is error
    assert info.value.__cause__ is raised


def test_an_answer_that_does_not_fit_the_model_is_a_protocol_error(api: respx.MockRouter) -> None:
    api.get("/v1/sandboxes/sb-1").respond(200, json={"id": "sb-1"})
    with pytest.raises(isorun.ProtocolError):
        Sandbox.connect("sb-1")


def test_a_closed_client_is_a_usage_error() -> None:
    client = Client()
    client.close()
    with pytest.raises(isorun.UsageError, match="closed"):
        Sandbox(client=client)
