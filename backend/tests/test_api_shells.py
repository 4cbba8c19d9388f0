"""Shells over the API: REST and the attach WebSocket on a real uvicorn, in one python sandbox
on the embedded node, then through a remote ``isorun-hostd serve`` (busybox).

The WebSocket client is ``websockets``, as a user's would be; output from while nobody was
attached comes back in the next attach's scrollback, Ctrl-C reaches the job in front, a resize
shows in ``stty size``, and a reader's input goes nowhere.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from api_support import assert_problem, auth, make_settings
from fastapi import FastAPI
from isorun_backend.main import create_app
from isorun_backend.services import Services
from isorun_backend.services.api_keys import create_key, create_tenant
from node_support import HostdNode
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from tests.framework.registry import Registry, free_port

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]

WAIT_S = 60.0
UNKNOWN = "sh-000000000000"


class Terminal:
    """One attach: its ``start`` frame, the output so far and the events (text frames)."""

    def __init__(self, socket: ClientConnection, start: dict[str, Any]) -> None:
        self.socket = socket
        self.start = start
        self.output = ""
        self.events: list[dict[str, Any]] = []

    async def until(self, pattern: str) -> str:
        """The output up to ``pattern`` (a regex) appearing in it."""

        async def collect() -> str:
            while not re.search(pattern, self.output):
                await self._next()
            return self.output

        try:
            return await asyncio.wait_for(collect(), WAIT_S)
        except TimeoutError:
            raise AssertionError(f"no {pattern!r}; output: {self.output[-2000:]!r}") from None

    async def event(self, kind: str) -> dict[str, Any]:
        """The next event of ``kind``, reading output on the way."""

        async def collect() -> dict[str, Any]:
            while True:
                for event in self.events:
                    if event["type"] == kind:
                        self.events.remove(event)
                        return event
                await self._next()

        return await asyncio.wait_for(collect(), WAIT_S)

    async def type(self, text: str) -> None:
        await self.socket.send(text.encode())

    async def _next(self) -> None:
        message = await self.socket.recv()
        if isinstance(message, bytes):
            self.output += message.decode(errors="replace")
        else:
            self.events.append(json.loads(message))


def ws_url(http: httpx.AsyncClient, path: str, **params: bool) -> str:
    query = httpx.QueryParams({name: str(value).lower() for name, value in params.items()})
    return str(http.base_url.join(path).copy_with(scheme="ws", query=str(query).encode()))


@asynccontextmanager
async def attached(
    http: httpx.AsyncClient, key: str, shell_path: str, **params: bool
) -> AsyncIterator[Terminal]:
    url = ws_url(http, f"{shell_path}/attach", **params)
    async with connect(url, additional_headers=auth(key), proxy=None) as socket:
        start = json.loads(await asyncio.wait_for(socket.recv(), WAIT_S))
        assert start["type"] == "start", start
        yield Terminal(socket, start)


async def refusal(http: httpx.AsyncClient, key: str | None, shell_path: str) -> Close:
    """How the attach of ``shell_path`` was closed before its start."""
    headers = auth(key) if key is not None else {}
    url = ws_url(http, f"{shell_path}/attach")
    async with connect(url, additional_headers=headers, proxy=None) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), WAIT_S)
    assert closed.value.rcvd is not None
    return closed.value.rcvd


async def open_shell(http: httpx.AsyncClient, key: str, path: str, **body: Any) -> str:
    response = await http.post(f"{path}/shells", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    return f"{path}/shells/{response.json()['id']}"


# -- the embedded node ----------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def path(http: httpx.AsyncClient, key: str) -> AsyncIterator[str]:
    """``/v1/sandboxes/<id>`` of the module's python sandbox."""
    response = await http.post(
        "/v1/sandboxes",
        json={"image": "python", "memory_mib": 512, "timeout_s": 1800},
        headers=auth(key),
    )
    assert response.status_code == 201, response.text
    yield f"/v1/sandboxes/{response.json()['id']}"
    await http.delete(f"/v1/sandboxes/{response.json()['id']}", headers=auth(key))


async def test_a_shell_outlives_its_clients_and_a_reader_cannot_type(
    http: httpx.AsyncClient, key: str, path: str
) -> None:
    created = await http.post(f"{path}/shells", json={"cols": 100, "rows": 30}, headers=auth(key))
    assert created.status_code == 201, created.text
    shell = created.json()
    assert re.fullmatch(r"sh-[0-9a-f]{12}", shell["id"])
    assert shell["command"][0] == "/bin/bash"  # no command: a login bash
    assert (shell["cols"], shell["rows"], shell["running"], shell["attached"]) == (100, 30, True, 0)
    assert (shell["exit_code"], shell["signal"], shell["writer"]) == (None, None, False)
    shell_path = f"{path}/shells/{shell['id']}"

    async with attached(http, key, shell_path, write=True) as first:
        assert first.start == {
            "type": "start",
            "pid": shell["pid"],
            "cols": 100,
            "rows": 30,
            "writer": True,
        }
        # The loop runs in its own sh, so Ctrl-C kills it for sure: bash's own loop loses a Ctrl-C
        # that lands while it forks the next command.
        await first.type("sh -c 'i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.2; done'\n")
        await first.until(r"tick-2\b")
    # Nobody attached: the loop goes on printing into the scrollback.
    await asyncio.sleep(2)
    async with attached(http, key, shell_path) as reader:
        assert reader.start["writer"] is False
        replay = await reader.until(r"tick-(1[0-9]|[2-9][0-9])\b")
        assert "tick-3\r\n" in replay, "the output from while detached is missing"
        await reader.type("\x03echo dropped-$((3*5))\n")
    async with attached(http, key, shell_path, write=True) as writer:
        await writer.type("\x03")
        await writer.type("echo stopped-$((6*7))\n")
        output = await writer.until(r"stopped-42")
        assert "dropped-15" not in output, "a reader's input reached the shell"
        listed = (await http.get(f"{path}/shells", headers=auth(key))).json()
        assert [(s["id"], s["running"], s["attached"], s["writer"]) for s in listed["data"]] == [
            (shell["id"], True, 1, True)
        ]
        assert listed["next_cursor"] is None

    closed = await http.delete(shell_path, headers=auth(key))
    assert closed.status_code == 204, closed.text
    assert (await http.get(f"{path}/shells", headers=auth(key))).json()["data"] == []
    audit = (await http.get(f"{path}/audit", headers=auth(key))).json()["data"]
    kinds = [entry["kind"] for entry in audit if entry["kind"].startswith("shell.")]
    assert (kinds[0], kinds[-1]) == ("shell.open", "shell.close")
    assert kinds.count("shell.attach") == kinds.count("shell.detach") == 3


async def test_resize_signal_and_the_end_of_a_shell(
    http: httpx.AsyncClient, key: str, path: str
) -> None:
    shell_path = await open_shell(http, key, path, command=["/bin/sh"])
    async with attached(http, key, shell_path, write=True) as term:
        resized = await http.post(
            f"{shell_path}/resize", json={"cols": 132, "rows": 43}, headers=auth(key)
        )
        assert resized.status_code == 204, resized.text
        assert await term.event("resize") == {"type": "resize", "cols": 132, "rows": 43}
        await term.type("stty size\n")
        await term.until(r"43 132")
        # The same through the socket's own control frame.
        await term.socket.send(json.dumps({"type": "resize", "cols": 90, "rows": 20}))
        assert await term.event("resize") == {"type": "resize", "cols": 90, "rows": 20}
        await term.type("stty size\n")
        await term.until(r"20 90")

        await term.type("sleep 300\n")
        await asyncio.sleep(1)
        signalled = await http.post(f"{shell_path}/signal", json={"signal": 2}, headers=auth(key))
        assert signalled.status_code == 204, signalled.text
        await term.type("echo after-$((1+1))\n")
        await term.until(r"after-2")
        await term.type("sleep 300\n")
        await asyncio.sleep(1)
        await term.socket.send(json.dumps({"type": "signal", "signal": 2}))
        await term.type("echo again-$((2+1))\n")
        await term.until(r"again-3")

        await term.type("exit 7\n")
        end = await term.event("exit")
        assert (end["exit_code"], end["signal"]) == (7, None) and end["duration_ms"] > 0
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(term.socket.recv(), WAIT_S)
        assert term.socket.close_code == 1000
    [ended] = (await http.get(f"{path}/shells", headers=auth(key))).json()["data"]
    assert (ended["running"], ended["exit_code"]) == (False, 7)
    assert (await http.delete(shell_path, headers=auth(key))).status_code == 204


async def test_unknown_shells_bad_requests_and_other_tenants(
    http: httpx.AsyncClient, key: str, other_key: str, path: str
) -> None:
    unknown = f"{path}/shells/{UNKNOWN}"
    assert_problem(await http.delete(unknown, headers=auth(key)), 404, "not_found")
    resize = await http.post(f"{unknown}/resize", json={"cols": 1, "rows": 1}, headers=auth(key))
    assert_problem(resize, 404, "not_found")
    signal = await http.post(f"{unknown}/signal", json={"signal": 15}, headers=auth(key))
    assert_problem(signal, 404, "not_found")
    assert (await refusal(http, key, unknown)).code == 4404

    missing = await http.post(f"{path}/shells", json={"command": ["/no/such"]}, headers=auth(key))
    assert_problem(missing, 400, "invalid_request")
    too_big = await http.post(f"{path}/shells", json={"cols": 1001}, headers=auth(key))
    assert_problem(too_big, 422, "invalid_request")

    shell_path = await open_shell(http, key, path, command=["/bin/sh"])
    try:
        theirs = await refusal(http, other_key, shell_path)
        assert theirs.code == 4404 and path.rsplit("/", 1)[1] in theirs.reason
        assert (await refusal(http, None, shell_path)).code == 4401
        assert (await refusal(http, "isr_not-a-key", shell_path)).code == 4401
        listed = await http.get(f"{path}/shells", headers=auth(other_key))
        assert_problem(listed, 404, "sandbox_not_found")
        assert_problem(
            await http.delete(shell_path, headers=auth(other_key)), 404, "sandbox_not_found"
        )
        async with attached(http, key, shell_path) as term:
            await term.socket.send(json.dumps({"type": "resize", "cols": 0, "rows": 5}))
            with pytest.raises(ConnectionClosed):
                while True:  # the scrollback (a prompt) may come first
                    await asyncio.wait_for(term.socket.recv(), WAIT_S)
            assert term.socket.close_code == 1007
    finally:
        assert (await http.delete(shell_path, headers=auth(key))).status_code == 204


async def test_a_hibernated_sandbox_is_resumed_with_its_shell(
    http: httpx.AsyncClient, key: str, path: str
) -> None:
    shell_path = await open_shell(http, key, path, command=["/bin/sh"])
    async with attached(http, key, shell_path, write=True) as term:
        await term.type("export MARK=kept-$((40+2)); echo ready\n")
        await term.until(r"ready")
    hibernated = await http.post(f"{path}/hibernate", headers=auth(key))
    assert hibernated.status_code == 200, hibernated.text
    async with attached(http, key, shell_path, write=True) as term:
        await term.until(r"ready")
        await term.type('echo "$MARK"\n')
        await term.until(r"kept-42")
    assert (await http.get(path, headers=auth(key))).json()["state"] == "running"
    assert (await http.delete(shell_path, headers=auth(key))).status_code == 204


async def test_a_sandbox_that_stops_under_an_attach_breaks_it_then_refuses_with_4409(
    http: httpx.AsyncClient, key: str
) -> None:
    response = await http.post(
        "/v1/sandboxes",
        json={"image": "busybox", "memory_mib": 128, "timeout_s": 15},
        headers=auth(key),
    )
    assert response.status_code == 201, response.text
    path = f"/v1/sandboxes/{response.json()['id']}"
    try:
        shell_path = await open_shell(http, key, path, command=["/bin/sh"])
        async with attached(http, key, shell_path, write=True) as term:
            await term.type("echo up\n")
            await term.until(r"up")
            # Its TTL stops the sandbox under the attach: a broken sandbox, not an exit.
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(term.socket.recv(), WAIT_S)
            assert term.socket.close_code == 1011
        stopped = await refusal(http, key, shell_path)
        assert stopped.code == 4409 and "stopped" in stopped.reason
        listed = await http.get(f"{path}/shells", headers=auth(key))
        assert_problem(listed, 409, "sandbox_not_running")
    finally:
        await http.delete(path, headers=auth(key))


# -- a remote node --------------------------------------------------------------------------


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` (its lifespan entered) on a loopback uvicorn, and a client for it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=120
        ) as client:
            yield client
    finally:
        server.should_exit = True
        await task


async def test_shells_through_a_remote_node(
    registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with tempfile.TemporaryDirectory(prefix="isr-sh-") as tmp:
        root = Path(tmp)
        node = HostdNode("node-s", root / "s", root / "rs", "token-s-" + "z" * 24, vcpus=2)
        node.start()
        try:
            data = tmp_path_factory.mktemp("backend-shells")
            settings = make_settings(data, data / "unused-run", registry, nodes=[node.config()])
            app = create_app(settings)
            async with app.router.lifespan_context(app), served(app) as http:
                services: Services = app.state.services
                tenant = await create_tenant(services.db, "shells")
                key = (await create_key(services.db, tenant)).key
                await _remote_session(http, key)
        finally:
            node.stop()
            assert not node.wait_no_qemu(), "the node left QEMU behind"


async def _remote_session(http: httpx.AsyncClient, key: str) -> None:
    created = await http.post(
        "/v1/sandboxes", json={"image": "busybox", "memory_mib": 256}, headers=auth(key)
    )
    assert created.status_code == 201, created.text
    path = f"/v1/sandboxes/{created.json()['id']}"
    # No bash in busybox: the node falls back to /bin/sh.
    shell = (await http.post(f"{path}/shells", json={}, headers=auth(key))).json()
    assert shell["command"] == ["/bin/sh"]
    shell_path = f"{path}/shells/{shell['id']}"
    async with attached(http, key, shell_path, write=True) as term:
        await term.type("echo remote-$((20+1))\n")
        await term.until(r"remote-21")
        await term.socket.send(json.dumps({"type": "resize", "cols": 77, "rows": 11}))
        assert await term.event("resize") == {"type": "resize", "cols": 77, "rows": 11}
    async with attached(http, key, shell_path) as reader:
        await reader.until(r"remote-21")
        listed = (await http.get(f"{path}/shells", headers=auth(key))).json()["data"]
        assert [(s["id"], s["cols"], s["rows"], s["attached"]) for s in listed] == [
            (shell["id"], 77, 11, 1)
        ]
        resized = await http.post(
            f"{shell_path}/resize", json={"cols": 80, "rows": 24}, headers=auth(key)
        )
        assert resized.status_code == 204
        assert await reader.event("resize") == {"type": "resize", "cols": 80, "rows": 24}
        signalled = await http.post(
            f"{shell_path}/signal", json={"signal": 1, "target": "shell"}, headers=auth(key)
        )
        assert signalled.status_code == 204
        end = await reader.event("exit")
        assert (end["exit_code"], end["signal"]) == (None, 1)
    assert (await refusal(http, key, f"{path}/shells/{UNKNOWN}")).code == 4404
    assert_problem(
        await http.delete(f"{path}/shells/{UNKNOWN}", headers=auth(key)), 404, "not_found"
    )
    missing = await http.post(f"{path}/shells", json={"command": ["/nope"]}, headers=auth(key))
    assert_problem(missing, 400, "invalid_request")
    assert (await http.delete(shell_path, headers=auth(key))).status_code == 204
    assert (await http.delete(path, headers=auth(key))).status_code == 204
