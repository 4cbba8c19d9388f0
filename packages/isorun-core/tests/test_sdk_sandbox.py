"""Sandbox (sync) against a respx-mocked API; test_sdk_async_sandbox.py is the async twin."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import isorun
import pytest
import respx
from isorun import Client, ExecResult, ExitEvent, OutputEvent, Sandbox, StartEvent

Info = Callable[..., dict[str, Any]]


def problem(status: int, code: str, detail: str = "nope") -> httpx.Response:
    body = {"code": code, "status": status, "detail": detail, "request_id": "req-1"}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


def ndjson(*objects: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


EXIT_0 = {"type": "exit", "exit_code": 0, "signal": None, "timed_out": False, "duration_ms": 5}
BUFFERED = {
    "exit_code": 0,
    "signal": None,
    "timed_out": False,
    "duration_ms": 12,
    "stdout": "hi\n",
    "stderr": "",
    "truncated": False,
}


@pytest.fixture
def created(api: respx.MockRouter, sandbox_json: Info) -> respx.Route:
    api.delete("/v1/sandboxes/sb-1").respond(204)
    return api.post("/v1/sandboxes").respond(201, json=sandbox_json())


@pytest.fixture
def sb(created: respx.Route) -> Iterator[Sandbox]:
    with Sandbox("python") as sandbox:
        yield sandbox


def test_create_sends_the_spec_body_with_network(
    api: respx.MockRouter, created: respx.Route
) -> None:
    sandbox = Sandbox(
        "python",
        vcpus=2,
        memory_mib=2048,
        timeout_s=60,
        env={"A": "1"},
        labels={"team": "ml"},
        deny=["0.0.0.0/0"],
        allow=["api.openai.com", "pypi.org"],
    )
    request = created.calls.last.request
    assert json.loads(request.content) == {
        "image": "python",
        "vcpus": 2,
        "memory_mib": 2048,
        "timeout_s": 60,
        "env": {"A": "1"},
        "metadata": {},
        "labels": {"team": "ml"},
        "network": {"allow": ["api.openai.com", "pypi.org"], "deny": ["0.0.0.0/0"]},
    }
    assert request.headers["Authorization"] == "Bearer isr_test"
    assert request.headers["Idempotency-Key"]
    assert sandbox.id == "sb-1"
    assert isinstance(sandbox.info, isorun.SandboxInfo)
    assert sandbox.info.image_ref.startswith("docker.io/")


def test_create_without_allow_or_deny_sends_no_network(created: respx.Route) -> None:
    Sandbox()
    assert "network" not in json.loads(created.calls.last.request.content)


@pytest.mark.parametrize(
    "failure",
    [
        problem(503, "unavailable"),
        httpx.Response(502, text="bad gateway"),
        httpx.ConnectError("refused"),
    ],
    ids=["503", "502", "connect-error"],
)
def test_create_is_retried_with_the_same_idempotency_key(
    api: respx.MockRouter, sandbox_json: Info, failure: httpx.Response | Exception
) -> None:
    route = api.post("/v1/sandboxes")
    route.side_effect = [failure, failure, httpx.Response(201, json=sandbox_json())]
    sandbox = Sandbox(client=Client(retry_backoff_s=0))
    assert sandbox.id == "sb-1"
    keys = {call.request.headers["Idempotency-Key"] for call in route.calls}
    assert route.call_count == 3
    assert len(keys) == 1


def test_each_create_call_has_its_own_idempotency_key(created: respx.Route) -> None:
    Sandbox()
    Sandbox()
    keys = {call.request.headers["Idempotency-Key"] for call in created.calls}
    assert len(keys) == 2


def test_create_gives_up_after_max_retries(api: respx.MockRouter) -> None:
    route = api.post("/v1/sandboxes").mock(return_value=problem(503, "unavailable"))
    with pytest.raises(isorun.ServiceUnavailable) as info:
        Sandbox(client=Client(retry_backoff_s=0, max_retries=2))
    assert route.call_count == 3
    assert info.value.request_id == "req-1"


def test_exec_is_not_retried_on_503(api: respx.MockRouter, sb: Sandbox) -> None:
    route = api.post("/v1/sandboxes/sb-1/exec").mock(return_value=problem(503, "unavailable"))
    with pytest.raises(isorun.ServiceUnavailable) as info:
        sb.exec("true")
    assert route.call_count == 1
    assert info.value.sandbox_id == "sb-1"


def test_exec_read_error_is_outcome_unknown(api: respx.MockRouter, sb: Sandbox) -> None:
    api.post("/v1/sandboxes/sb-1/exec").mock(side_effect=httpx.ReadError("reset"))
    with pytest.raises(isorun.OutcomeUnknown) as info:
        sb.exec("rm -rf /tmp/x")
    assert isinstance(info.value.__cause__, isorun.ReadError)
    assert isinstance(info.value.__cause__.__cause__, httpx.ReadError)


def test_exec_connect_error_is_a_plain_connect_error(api: respx.MockRouter, sb: Sandbox) -> None:
    route = api.post("/v1/sandboxes/sb-1/exec").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(isorun.ConnectError):
        sb.exec("true")
    assert route.call_count == 1


def test_buffered_exec_sends_options_and_returns_fields(api: respx.MockRouter, sb: Sandbox) -> None:
    route = api.post("/v1/sandboxes/sb-1/exec").respond(200, json=BUFFERED)
    result = sb.exec("echo hi", env={"X": "1"}, cwd="/tmp", user="nobody", timeout_s=10, stdin="in")
    request = route.calls.last.request
    assert json.loads(request.content) == {
        "command": "echo hi",
        "env": {"X": "1"},
        "cwd": "/tmp",
        "user": "nobody",
        "timeout_s": 10,
        "stdin": "in",
    }
    assert "ndjson" not in request.headers.get("Accept", "")
    assert request.extensions["timeout"]["read"] == 60 + 10
    assert result.model_dump() == ExecResult(**BUFFERED).model_dump()
    assert (result.exit_code, result.stdout, result.stderr, result.ok) == (0, "hi\n", "", True)


def test_exec_list_is_argv_and_no_timeout_means_no_read_timeout(
    api: respx.MockRouter, sb: Sandbox
) -> None:
    route = api.post("/v1/sandboxes/sb-1/exec").respond(200, json=BUFFERED)
    sb.exec(["python", "-c", "print(1)"])
    request = route.calls.last.request
    assert json.loads(request.content)["command"] == ["python", "-c", "print(1)"]
    assert json.loads(request.content)["timeout_s"] == 0
    assert request.extensions["timeout"]["read"] is None


def test_run_sends_its_arguments_as_argv(api: respx.MockRouter, sb: Sandbox) -> None:
    route = api.post("/v1/sandboxes/sb-1/exec").respond(200, json=BUFFERED)
    assert sb.run("python", "-c", "'2**32'").stdout == "hi\n"
    assert json.loads(route.calls.last.request.content)["command"] == ["python", "-c", "'2**32'"]
    with pytest.raises(isorun.UsageError):
        sb.run()


def test_failed_exec_is_a_result_unless_checked(api: respx.MockRouter, sb: Sandbox) -> None:
    failed = {**BUFFERED, "exit_code": 2, "stderr": "boom\n"}
    api.post("/v1/sandboxes/sb-1/exec").respond(200, json=failed)
    result = sb.exec("false")
    assert (result.exit_code, result.ok) == (2, False)
    with pytest.raises(isorun.ExecFailed, match="exited with 2: boom") as info:
        result.check()
    assert info.value.result is result
    assert info.value.sandbox_id == "sb-1"
    with pytest.raises(isorun.ExecFailed):
        sb.exec("false", check=True)


def test_timed_out_exec_raises_exec_timeout_when_checked(
    api: respx.MockRouter, sb: Sandbox
) -> None:
    timed_out = {**BUFFERED, "exit_code": None, "signal": 9, "timed_out": True}
    api.post("/v1/sandboxes/sb-1/exec").respond(200, json=timed_out)
    assert sb.exec("sleep 9", timeout_s=1).timed_out
    with pytest.raises(isorun.ExecTimeout):
        sb.exec("sleep 9", timeout_s=1, check=True)


def test_callbacks_receive_output_as_it_arrives(api: respx.MockRouter, sb: Sandbox) -> None:
    log: list[str] = []

    def body() -> Iterator[bytes]:
        lines = [
            {"type": "start", "pid": 7},
            {"type": "stdout", "data": "b25lCg=="},  # "one\n"
            {"type": "stderr", "data": "d2Fybgo="},  # "warn\n"
            {"type": "stdout", "data": "dHdvCg=="},  # "two\n"
            EXIT_0,
        ]
        for line in lines:
            log.append(f"sent {line['type']}")
            yield ndjson(line)

    route = api.post("/v1/sandboxes/sb-1/exec").mock(
        side_effect=lambda request: httpx.Response(200, content=body())
    )
    result = sb.exec(
        "x",
        on_stdout=lambda text: log.append(f"out {text!r}"),
        on_stderr=lambda text: log.append(f"err {text!r}"),
    )
    assert route.calls.last.request.headers["Accept"] == "application/x-ndjson"
    assert log == [
        "sent start",
        "sent stdout",
        "out 'one\\n'",
        "sent stderr",
        "err 'warn\\n'",
        "sent stdout",
        "out 'two\\n'",
        "sent exit",
    ]
    assert (result.stdout, result.stderr, result.exit_code) == ("one\ntwo\n", "warn\n", 0)


def test_exec_stream_yields_typed_events(api: respx.MockRouter, sb: Sandbox) -> None:
    body = ndjson({"type": "start", "pid": 7}, {"type": "stdout", "data": "AP8="}, EXIT_0)
    api.post("/v1/sandboxes/sb-1/exec").respond(200, content=body)
    events = list(sb.exec_stream(["cat"]))
    assert events == [
        StartEvent(pid=7),
        OutputEvent(stream="stdout", data=b"\x00\xff"),
        ExitEvent(exit_code=0, timed_out=False, duration_ms=5),
    ]


def test_exec_stream_error_line_after_start_raises_the_problem(
    api: respx.MockRouter, sb: Sandbox
) -> None:
    error = {"type": "error", "code": "sandbox_not_running", "status": 409, "detail": "stopped"}
    body = ndjson({"type": "start", "pid": 7}, error)
    api.post("/v1/sandboxes/sb-1/exec").respond(200, content=body)
    seen = []
    with pytest.raises(isorun.SandboxStateError) as info:
        seen.extend(sb.exec_stream("x"))
    assert seen == [StartEvent(pid=7)]
    assert (info.value.status_code, info.value.sandbox_id) == (409, "sb-1")


def test_exec_stream_refused_at_start_raises_before_any_event(
    api: respx.MockRouter, sb: Sandbox
) -> None:
    api.post("/v1/sandboxes/sb-1/exec").mock(return_value=problem(404, "sandbox_not_found"))
    with pytest.raises(isorun.SandboxNotFound):
        next(sb.exec_stream("x"))


def test_with_block_deletes_the_sandbox_even_when_the_body_raises(
    api: respx.MockRouter, created: respx.Route
) -> None:
    with pytest.raises(RuntimeError, match="agent crashed"), Sandbox("python"):
        raise RuntimeError("agent crashed")
    assert api.routes[0].call_count == 1  # the DELETE


def test_with_block_error_wins_over_a_failed_delete(
    api: respx.MockRouter, sandbox_json: Info
) -> None:
    api.post("/v1/sandboxes").respond(201, json=sandbox_json())
    api.delete("/v1/sandboxes/sb-1").mock(return_value=problem(500, "internal"))
    with pytest.raises(RuntimeError), Sandbox():
        raise RuntimeError("the real problem")
    with pytest.raises(isorun.ServerError), Sandbox():
        pass


def test_destroy_counts_an_already_deleted_sandbox_as_deleted(
    api: respx.MockRouter, sandbox_json: Info
) -> None:
    api.post("/v1/sandboxes").respond(201, json=sandbox_json())
    route = api.delete("/v1/sandboxes/sb-1").mock(return_value=problem(404, "sandbox_not_found"))
    Sandbox().destroy()
    assert route.call_count == 1


def test_own_client_is_closed_after_destroy(sb: Sandbox) -> None:
    sb.destroy()
    with pytest.raises(isorun.UsageError, match="closed"):
        sb.refresh()


def test_shared_client_outlives_its_sandboxes(api: respx.MockRouter, created: respx.Route) -> None:
    with Client() as client:
        first, second = Sandbox(client=client), Sandbox(client=client)
        first.destroy()
        second.destroy()
        assert not client.is_closed
    assert client.is_closed


def test_connection_options_beside_a_client_are_refused() -> None:
    with pytest.raises(isorun.UsageError, match="api_key"):
        Sandbox(client=Client(), api_key="isr_other")


def test_connect_refresh_and_keep_alive(api: respx.MockRouter, sandbox_json: Info) -> None:
    api.get("/v1/sandboxes/sb-1").respond(200, json=sandbox_json(state="stopped"))
    keep = api.post("/v1/sandboxes/sb-1/keepalive").respond(
        200, json=sandbox_json(expires_at="2025-01-01T01:00:00Z")
    )
    sandbox = Sandbox.connect("sb-1")
    assert sandbox.info.state == "stopped"
    assert sandbox.refresh().state == "stopped"
    assert sandbox.keep_alive(3600).expires_at.hour == 1
    assert sandbox.info.expires_at.hour == 1
    assert json.loads(keep.calls.last.request.content) == {"timeout_s": 3600}


def test_connect_to_a_missing_sandbox(api: respx.MockRouter) -> None:
    api.get("/v1/sandboxes/sb-x").mock(return_value=problem(404, "sandbox_not_found"))
    with pytest.raises(isorun.SandboxNotFound):
        Sandbox.connect("sb-x")


def test_list_follows_the_cursor(api: respx.MockRouter, sandbox_json: Info) -> None:
    route = api.get("/v1/sandboxes")
    route.side_effect = [
        httpx.Response(200, json={"data": [sandbox_json(id="sb-1")], "next_cursor": "c2"}),
        httpx.Response(200, json={"data": [sandbox_json(id="sb-2")], "next_cursor": None}),
    ]
    found = Sandbox.list(state="running", labels={"team": "ml"}, page_size=1)
    assert [info.id for info in found] == ["sb-1", "sb-2"]
    first, second = (call.request.url.params for call in route.calls)
    assert (first["state"], first["label"], first["limit"]) == ("running", "team=ml", "1")
    assert "cursor" not in first
    assert second["cursor"] == "c2"


def test_processes_and_signal(api: respx.MockRouter, sb: Sandbox) -> None:
    process = {"pid": 7, "tag": None, "argv": ["sleep", "9"], "running": True}
    api.get("/v1/sandboxes/sb-1/processes").respond(
        200, json={"data": [{**process, "exit_code": None, "signal": None}], "next_cursor": None}
    )
    signal = api.post("/v1/sandboxes/sb-1/processes/7/signal").respond(204)
    [found] = sb.processes()
    assert (found.pid, found.running, found.argv) == (7, True, ["sleep", "9"])
    sb.signal(7, 15)
    assert json.loads(signal.calls.last.request.content) == {"signal": 15}
