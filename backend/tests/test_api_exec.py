"""Exec and processes over the API, in one python sandbox for the module."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from api_support import assert_problem, auth

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]

NDJSON = {"Accept": "application/x-ndjson"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def path(client: httpx.AsyncClient, key: str) -> AsyncIterator[str]:
    """``/v1/sandboxes/<id>`` of the module's python sandbox."""
    response = await client.post(
        "/v1/sandboxes", json={"image": "python", "memory_mib": 512}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    yield f"/v1/sandboxes/{response.json()['id']}"
    await client.delete(f"/v1/sandboxes/{response.json()['id']}", headers=auth(key))


async def test_buffered_exec_of_an_argv(client: httpx.AsyncClient, key: str, path: str) -> None:
    response = await client.post(
        f"{path}/exec", json={"command": ["python3", "-c", "print(2**32)"]}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["stdout"] == "4294967296\n"
    assert (result["exit_code"], result["signal"], result["timed_out"]) == (0, None, False)
    assert (result["stderr"], result["truncated"]) == ("", False)
    assert result["duration_ms"] >= 0


async def test_a_string_runs_in_a_shell_with_cwd_user_and_exit_code(
    client: httpx.AsyncClient, key: str, path: str
) -> None:
    body = {"command": "pwd; id -un; echo oops >&2; exit 3", "cwd": "/tmp", "user": "nobody"}
    result = (await client.post(f"{path}/exec", json=body, headers=auth(key))).json()
    assert (result["stdout"], result["stderr"], result["exit_code"]) == (
        "/tmp\nnobody\n",
        "oops\n",
        3,
    )


async def test_stdin_is_fed_then_closed(client: httpx.AsyncClient, key: str, path: str) -> None:
    text = "".join(f"line {i} ünïcode\n" for i in range(5000))
    body = {"command": ["python3", "-c", "import sys; print(len(sys.stdin.read()))"]}
    response = await client.post(f"{path}/exec", json={**body, "stdin": text}, headers=auth(key))
    assert response.json()["stdout"] == f"{len(text)}\n"


async def test_stdin_beyond_one_window_is_refused(
    client: httpx.AsyncClient, key: str, path: str
) -> None:
    body = {"command": "cat", "stdin": "é" * (200 << 10)}  # 400 KiB as UTF-8
    response = await client.post(f"{path}/exec", json=body, headers=auth(key))
    assert_problem(response, 422, "invalid_request")


async def test_timeout_and_signal_are_reported(
    client: httpx.AsyncClient, key: str, path: str
) -> None:
    body = {"command": "sleep 30", "timeout_s": 0.5}
    result = (await client.post(f"{path}/exec", json=body, headers=auth(key))).json()
    assert (result["timed_out"], result["signal"], result["exit_code"]) == (
        True,
        signal.SIGKILL,
        None,
    )


async def test_output_past_16_mib_is_truncated(
    client: httpx.AsyncClient, key: str, path: str
) -> None:
    script = "import sys; sys.stdout.write('x' * (17 << 20)); sys.stderr.write('done')"
    body = {"command": ["python3", "-c", script]}
    result = (await client.post(f"{path}/exec", json=body, headers=auth(key))).json()
    assert result["truncated"] is True
    assert len(result["stdout"]) == 16 << 20
    assert (result["stderr"], result["exit_code"]) == ("done", 0)


async def test_a_command_that_cannot_start_is_invalid(
    client: httpx.AsyncClient, key: str, path: str
) -> None:
    for body in (
        {"command": ["/no/such/program"]},
        {"command": "true", "cwd": "/no/such/folder"},
        {"command": "true", "user": "nosuchuser"},
    ):
        response = await client.post(f"{path}/exec", json=body, headers=auth(key))
        problem = assert_problem(response, 400, "invalid_request")
        assert problem["sandbox_id"] == path.rsplit("/", 1)[1]
    for body in ({"command": []}, {"command": ""}, {"command": "true", "timeout_s": -1}):
        response = await client.post(f"{path}/exec", json=body, headers=auth(key))
        assert_problem(response, 422, "invalid_request")


async def test_streamed_exec_is_ndjson_in_order(
    client: httpx.AsyncClient, key: str, path: str
) -> None:
    body = {"command": "echo one; echo two >&2; printf '\\377'; exit 7"}
    response = await client.post(f"{path}/exec", json=body, headers={**auth(key), **NDJSON})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    events = [json.loads(line) for line in response.text.splitlines()]
    assert events[0]["type"] == "start" and events[0]["pid"] > 0
    assert events[-1] == {
        "type": "exit",
        "exit_code": 7,
        "signal": None,
        "timed_out": False,
        "duration_ms": events[-1]["duration_ms"],
    }
    output: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    for event in events[1:-1]:
        output[event["type"]] += base64.b64decode(event["data"])
    assert output == {"stdout": b"one\n\xff", "stderr": b"two\n"}


async def test_a_streamed_exec_that_cannot_start_is_a_plain_error(
    client: httpx.AsyncClient, key: str, path: str
) -> None:
    response = await client.post(
        f"{path}/exec", json={"command": ["/no/such/program"]}, headers={**auth(key), **NDJSON}
    )
    assert_problem(response, 400, "invalid_request")


async def test_streamed_events_arrive_while_the_process_runs(
    http: httpx.AsyncClient, key: str, path: str
) -> None:
    """Over a real socket: the process waits for a file that the test writes only after it
    has read the process's first output line from the stream."""
    script = "echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo done"
    headers = {**auth(key), **NDJSON}
    async with http.stream(
        "POST", f"{path}/exec", json={"command": script, "timeout_s": 60}, headers=headers
    ) as response:
        lines = response.aiter_lines()
        assert json.loads(await anext(lines))["type"] == "start"
        first = json.loads(await anext(lines))
        assert base64.b64decode(first["data"]) == b"ready\n"
        written = await http.put(
            f"{path}/files/content", params={"path": "/tmp/go"}, content=b"", headers=auth(key)
        )
        assert written.status_code == 200
        rest = [json.loads(line) async for line in lines]
    assert [e["type"] for e in rest] == ["stdout", "exit"]
    assert base64.b64decode(rest[0]["data"]) == b"done\n"


async def test_processes_list_and_signal(client: httpx.AsyncClient, key: str, path: str) -> None:
    headers = auth(key)
    stream_headers = {**headers, **NDJSON}
    body = {"command": ["sleep", "300"], "timeout_s": 600}

    async def run_sleep() -> list[dict[str, Any]]:
        response = await client.post(f"{path}/exec", json=body, headers=stream_headers)
        return [json.loads(line) for line in response.text.splitlines()]

    # ASGITransport buffers a response whole, so the stream is read when sleep has ended.
    sleeper = asyncio.create_task(run_sleep())
    pid = None
    for _ in range(100):
        listing = (await client.get(f"{path}/processes", headers=headers)).json()
        running = [p for p in listing["data"] if p["argv"] == ["sleep", "300"] and p["running"]]
        if running:
            pid = running[0]["pid"]
            break
        await asyncio.sleep(0.05)
    assert pid is not None
    assert listing["next_cursor"] is None
    response = await client.post(
        f"{path}/processes/{pid}/signal", json={"signal": signal.SIGTERM}, headers=headers
    )
    assert response.status_code == 204
    events = await asyncio.wait_for(sleeper, 30)
    assert events[-1]["signal"] == signal.SIGTERM
    response = await client.post(
        f"{path}/processes/999999/signal", json={"signal": 15}, headers=headers
    )
    assert_problem(response, 404, "not_found")
    response = await client.post(
        f"{path}/processes/{pid}/signal", json={"signal": 0}, headers=headers
    )
    assert_problem(response, 422, "invalid_request")
