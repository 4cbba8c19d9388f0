"""AsyncSandbox against a respx-mocked API; the async twin of test_sdk_sandbox.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import isorun
import pytest
import respx
from isorun import AsyncClient, AsyncSandbox, ExitEvent, OutputEvent, Sandbox, StartEvent

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
async def sb(created: respx.Route) -> AsyncIterator[AsyncSandbox]:
    async with AsyncSandbox.create("python") as sandbox:
        yield sandbox


async def test_sandbox_create_is_awaitable_as_on_the_landing_page(
    api: respx.MockRouter, created: respx.Route
) -> None:
    exec_route = api.post("/v1/sandboxes/sb-1/exec").respond(200, json=BUFFERED)
    sb = await Sandbox.create()
    assert isinstance(sb, AsyncSandbox)
    r = await sb.run("python", "-c", "'2**32'")
    await sb.destroy()
    assert r.stdout == "hi\n"
    assert json.loads(exec_route.calls.last.request.content)["command"][0] == "python"
    assert api.routes[0].call_count == 1  # the DELETE


async def test_create_sends_the_spec_body_with_network(created: respx.Route) -> None:
    sandbox = await AsyncSandbox.create(
        "python", labels={"team": "ml"}, deny=["0.0.0.0/0"], allow=["pypi.org"]
    )
    body = json.loads(created.calls.last.request.content)
    assert body["network"] == {"allow": ["pypi.org"], "deny": ["0.0.0.0/0"]}
    assert body["labels"] == {"team": "ml"}
    assert created.calls.last.request.headers["Idempotency-Key"]
    assert sandbox.id == "sb-1"
    await sandbox.aclose()


async def test_nothing_is_sent_until_awaited_and_only_once(created: respx.Route) -> None:
    creation = AsyncSandbox.create()
    assert created.call_count == 0
    sandbox = await creation
    with pytest.raises(isorun.UsageError, match="already"):
        await creation
    assert created.call_count == 1
    await sandbox.aclose()


@pytest.mark.parametrize(
    "failure",
    [problem(503, "unavailable"), httpx.Response(504, text="timeout"), httpx.ConnectError("no")],
    ids=["503", "504", "connect-error"],
)
async def test_create_is_retried_with_the_same_idempotency_key(
    api: respx.MockRouter, sandbox_json: Info, failure: httpx.Response | Exception
) -> None:
    route = api.post("/v1/sandboxes")
    route.side_effect = [failure, failure, httpx.Response(201, json=sandbox_json())]
    async with AsyncClient(retry_backoff_s=0) as client:
        sandbox = await AsyncSandbox.create(client=client)
    assert sandbox.id == "sb-1"
    assert route.call_count == 3
    assert len({call.request.headers["Idempotency-Key"] for call in route.calls}) == 1


async def test_create_gives_up_after_max_retries(api: respx.MockRouter) -> None:
    route = api.post("/v1/sandboxes").mock(return_value=problem(503, "unavailable"))
    async with AsyncClient(retry_backoff_s=0, max_retries=1) as client:
        with pytest.raises(isorun.ServiceUnavailable):
            await AsyncSandbox.create(client=client)
    assert route.call_count == 2


async def test_exec_is_not_retried_on_503(api: respx.MockRouter, sb: AsyncSandbox) -> None:
    route = api.post("/v1/sandboxes/sb-1/exec").mock(return_value=problem(503, "unavailable"))
    with pytest.raises(isorun.ServiceUnavailable):
        await sb.exec("true")
    assert route.call_count == 1


async def test_exec_read_timeout_is_outcome_unknown(
    api: respx.MockRouter, sb: AsyncSandbox
) -> None:
    api.post("/v1/sandboxes/sb-1/exec").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(isorun.OutcomeUnknown) as info:
        await sb.exec("true")
    assert isinstance(info.value.__cause__, isorun.ReadTimeout)


async def test_buffered_exec_sends_options_and_returns_fields(
    api: respx.MockRouter, sb: AsyncSandbox
) -> None:
    route = api.post("/v1/sandboxes/sb-1/exec").respond(200, json=BUFFERED)
    result = await sb.exec(["echo", "hi"], env={"X": "1"}, cwd="/tmp", timeout_s=2.5)
    request = route.calls.last.request
    body = json.loads(request.content)
    assert (body["command"], body["env"], body["cwd"], body["timeout_s"]) == (
        ["echo", "hi"],
        {"X": "1"},
        "/tmp",
        2.5,
    )
    assert request.extensions["timeout"]["read"] == 62.5
    assert (result.exit_code, result.stdout, result.duration_ms) == (0, "hi\n", 12)


async def test_failed_exec_raises_only_when_checked(
    api: respx.MockRouter, sb: AsyncSandbox
) -> None:
    api.post("/v1/sandboxes/sb-1/exec").respond(200, json={**BUFFERED, "exit_code": 1})
    assert (await sb.exec("false")).exit_code == 1
    with pytest.raises(isorun.ExecFailed) as info:
        await sb.run("false", check=True)
    assert info.value.sandbox_id == "sb-1"


async def test_callbacks_receive_output_as_it_arrives(
    api: respx.MockRouter, sb: AsyncSandbox
) -> None:
    log: list[str] = []

    async def body() -> AsyncIterator[bytes]:
        lines = [
            {"type": "start", "pid": 7},
            {"type": "stdout", "data": "b25lCg=="},  # "one\n"
            {"type": "stderr", "data": "d2Fybgo="},  # "warn\n"
            EXIT_0,
        ]
        for line in lines:
            log.append(f"sent {line['type']}")
            yield ndjson(line)

    api.post("/v1/sandboxes/sb-1/exec").mock(
        side_effect=lambda request: httpx.Response(200, content=body())
    )
    result = await sb.exec(
        "x",
        on_stdout=lambda text: log.append(f"out {text!r}"),
        on_stderr=lambda text: log.append(f"err {text!r}"),
    )
    assert log == [
        "sent start",
        "sent stdout",
        "out 'one\\n'",
        "sent stderr",
        "err 'warn\\n'",
        "sent exit",
    ]
    assert (result.stdout, result.stderr) == ("one\n", "warn\n")


async def test_exec_stream_yields_typed_events(api: respx.MockRouter, sb: AsyncSandbox) -> None:
    body = ndjson({"type": "start", "pid": 7}, {"type": "stderr", "data": "AP8="}, EXIT_0)
    api.post("/v1/sandboxes/sb-1/exec").respond(200, content=body)
    events = [event async for event in sb.exec_stream(["cat"])]
    assert events == [
        StartEvent(pid=7),
        OutputEvent(stream="stderr", data=b"\x00\xff"),
        ExitEvent(exit_code=0, timed_out=False, duration_ms=5),
    ]


async def test_exec_stream_error_line_after_start_raises_the_problem(
    api: respx.MockRouter, sb: AsyncSandbox
) -> None:
    error = {"type": "error", "code": "internal", "status": 500, "detail": "agent lost"}
    api.post("/v1/sandboxes/sb-1/exec").respond(
        200, content=ndjson({"type": "start", "pid": 7}, error)
    )
    seen = []
    with pytest.raises(isorun.ServerError, match="agent lost"):
        async for event in sb.exec_stream("x"):
            seen.append(event)
    assert seen == [StartEvent(pid=7)]


async def test_async_with_deletes_the_sandbox_even_when_the_body_raises(
    api: respx.MockRouter, created: respx.Route
) -> None:
    with pytest.raises(RuntimeError, match="agent crashed"):
        async with AsyncSandbox.create():
            raise RuntimeError("agent crashed")
    assert api.routes[0].call_count == 1  # the DELETE


async def test_async_with_on_an_awaited_sandbox_deletes_too(
    api: respx.MockRouter, created: respx.Route
) -> None:
    with pytest.raises(RuntimeError):
        async with await AsyncSandbox.create():
            raise RuntimeError
    assert api.routes[0].call_count == 1


async def test_destroy_is_idempotent_and_closes_its_own_client(
    api: respx.MockRouter, sandbox_json: Info
) -> None:
    api.post("/v1/sandboxes").respond(201, json=sandbox_json())
    route = api.delete("/v1/sandboxes/sb-1").mock(return_value=problem(404, "sandbox_not_found"))
    sandbox = await AsyncSandbox.create()
    await sandbox.destroy()
    await sandbox.destroy()
    assert route.call_count == 1
    with pytest.raises(isorun.UsageError, match="closed"):
        await sandbox.refresh()


async def test_connect_refresh_and_keep_alive(api: respx.MockRouter, sandbox_json: Info) -> None:
    api.get("/v1/sandboxes/sb-1").respond(200, json=sandbox_json())
    api.post("/v1/sandboxes/sb-1/keepalive").respond(
        200, json=sandbox_json(expires_at="2025-01-01T01:00:00Z")
    )
    sandbox = await AsyncSandbox.connect("sb-1")
    assert (await sandbox.refresh()).state == "running"
    assert (await sandbox.keep_alive(3600)).expires_at.hour == 1
    await sandbox.aclose()


async def test_list_follows_the_cursor(api: respx.MockRouter, sandbox_json: Info) -> None:
    route = api.get("/v1/sandboxes")
    route.side_effect = [
        httpx.Response(200, json={"data": [sandbox_json(id="sb-1")], "next_cursor": "c2"}),
        httpx.Response(200, json={"data": [sandbox_json(id="sb-2")], "next_cursor": None}),
    ]
    found = [info.id async for info in AsyncSandbox.list(labels={"a": "b"}, page_size=1)]
    assert found == ["sb-1", "sb-2"]
    assert route.calls.last.request.url.params["cursor"] == "c2"


async def test_processes_and_signal(api: respx.MockRouter, sb: AsyncSandbox) -> None:
    process = {"pid": 7, "argv": ["sleep", "9"], "running": False, "exit_code": 0}
    api.get("/v1/sandboxes/sb-1/processes").respond(
        200, json={"data": [process], "next_cursor": None}
    )
    signal = api.post("/v1/sandboxes/sb-1/processes/7/signal").respond(204)
    [found] = await sb.processes()
    assert (found.pid, found.exit_code) == (7, 0)
    await sb.signal(7, 9)
    assert json.loads(signal.calls.last.request.content) == {"signal": 9}
