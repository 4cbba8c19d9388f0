"""TCP tunnels into real microVMs (python fixture image): a host connection to a port on the
guest's loopback, carried by the agent's connect op (protocol.md 5.7).

An HTTP server in the guest answers a raw request through the tunnel; a port nothing listens
on is refused at once; a 4 MiB body through an echo server comes back intact, which needs flow
control in both directions (the body is sixteen windows).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from isorun_hostd.agent_channel import AgentError, Tunnel
from isorun_hostd.sandboxes import Runtime, Sandbox

from tests.framework.guest_servers import ECHO_SERVER

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]

WAIT_S = 30.0


@pytest_asyncio.fixture(loop_scope="session")
async def sandbox(runtime: Runtime, python_ref: str) -> AsyncIterator[Sandbox]:
    sb = await runtime.create(python_ref)
    yield sb
    await runtime.destroy(sb)


async def start_server(sandbox: Sandbox, argv: list[str]) -> None:
    """Start a server in the guest; it keeps running after the exec stream is detached."""
    process = await sandbox.exec(argv, cwd="/tmp")
    process.detach()


async def connect_when_listening(sandbox: Sandbox, port: int) -> Tunnel:
    """Retry the connection while the guest server is still starting (``refused``)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return await sandbox.connect_port(port)
        except AgentError as exc:
            if exc.code != "refused" or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def read_all(tunnel: Tunnel) -> bytes:
    chunks = []
    while chunk := await tunnel.read():
        chunks.append(chunk)
    return b"".join(chunks)


async def test_http_through_a_tunnel_and_a_refused_port(sandbox: Sandbox) -> None:
    await start_server(sandbox, ["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"])
    tunnel = await connect_when_listening(sandbox, 8000)
    async with tunnel:
        await tunnel.write(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        await tunnel.write_eof()
        answer = await asyncio.wait_for(read_all(tunnel), WAIT_S)
        end = await asyncio.wait_for(tunnel.wait(), WAIT_S)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), answer[:500]
    assert b"Directory listing for /" in body, body[:500]
    assert end.bytes_out == len(answer) and end.bytes_in > 0

    started = time.monotonic()
    with pytest.raises(AgentError) as info:
        await sandbox.connect_port(8001)
    assert info.value.code == "refused"
    assert time.monotonic() - started < 3.0


async def test_a_large_body_echoes_back_intact(sandbox: Sandbox) -> None:
    await start_server(sandbox, ["python3", "-c", ECHO_SERVER])
    body = os.urandom(4 << 20)
    tunnel = await connect_when_listening(sandbox, 9000)

    async def send() -> None:
        for i in range(0, len(body), 100_000):
            await tunnel.write(body[i : i + 100_000])
        await tunnel.write_eof()

    async with tunnel:
        sender = asyncio.create_task(send())
        echoed = await asyncio.wait_for(read_all(tunnel), 120)
        await sender
        end = await asyncio.wait_for(tunnel.wait(), WAIT_S)
    assert len(echoed) == len(body)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(body).digest()
    assert (end.bytes_in, end.bytes_out) == (len(body), len(body))
