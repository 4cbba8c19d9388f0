"""Ports through a remote node (spec/node.md "Ports"): RemoteNode.connect_port over the port
WebSocket of a real ``isorun-hostd serve`` (node_support), into a python fixture VM.

An HTTP server in the guest answers a raw request; a 2 MiB body through an echo server comes
back intact while it is still being sent (both directions at once, each held back by the
other's pace); a port nothing listens on is the embedded node's AgentError ``refused``; an
unknown sandbox is ChannelClosed, as for the other node calls; the socket refuses a wrong token
before any data.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from api_support import PYTHON_IMAGE
from isorun_backend.nodes import NodeUnavailable, RemoteNode
from isorun_backend.nodes.base import NodePort
from isorun_hostd.agent_channel import AgentError, ChannelClosed
from node_support import HostdNode
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.framework.guest_servers import ECHO_SERVER
from tests.framework.registry import Registry

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]

WAIT_S = 60.0


@pytest.fixture(scope="module")
def node(registry: Registry) -> Iterator[HostdNode]:
    with tempfile.TemporaryDirectory(prefix="isr-pt-") as tmp:
        root = Path(tmp)
        hostd = HostdNode("node-p", root / "p", root / "rp", "token-p-" + "w" * 24, vcpus=2)
        hostd.start()
        try:
            yield hostd
        finally:
            hostd.stop()
            assert not hostd.wait_no_qemu(), "the node left QEMU behind"


@pytest_asyncio.fixture(loop_scope="session")
async def remote(node: HostdNode) -> AsyncIterator[RemoteNode]:
    remote = RemoteNode(node.name, node.url, node.token)
    yield remote
    await remote.aclose()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def sandbox_id(node: HostdNode, registry: Registry) -> AsyncIterator[str]:
    """A python VM serving HTTP on 8000 and echoing on 9000 (detached: they keep running)."""
    remote = RemoteNode(node.name, node.url, node.token)
    try:
        sandbox = await remote.create("ports-1", registry.ref(PYTHON_IMAGE), vcpus=1, mem_mib=512)
        try:
            http = ["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"]
            for server in (http, ["python3", "-c", ECHO_SERVER]):
                await (await remote.exec(sandbox.id, server, {"cwd": "/tmp"})).detach()
            yield sandbox.id
        finally:
            await remote.destroy(sandbox.id)
    finally:
        await remote.aclose()


async def connect_when_listening(remote: RemoteNode, sandbox_id: str, port: int) -> NodePort:
    """Retry while the guest server is still starting (``refused``)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return await remote.connect_port(sandbox_id, port)
        except AgentError as exc:
            if exc.code != "refused" or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def read_all(port: NodePort) -> bytes:
    chunks = []
    while chunk := await port.read():
        chunks.append(chunk)
    return b"".join(chunks)


async def test_http_through_a_remote_port_and_a_refused_one(
    remote: RemoteNode, sandbox_id: str
) -> None:
    # Dropped unused first: the server goes on to answer the next connection.
    await (await connect_when_listening(remote, sandbox_id, 8000)).aclose()
    port = await connect_when_listening(remote, sandbox_id, 8000)
    try:
        await port.write(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        await port.write_eof()
        answer = await asyncio.wait_for(read_all(port), WAIT_S)
        assert await port.read() == b""
    finally:
        await port.aclose()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), answer[:500]
    assert b"Directory listing for /" in body, body[:500]

    with pytest.raises(AgentError) as refused:
        await remote.connect_port(sandbox_id, 8001)
    assert (refused.value.op, refused.value.code) == ("connect", "refused")


async def test_a_large_body_echoes_back_intact(remote: RemoteNode, sandbox_id: str) -> None:
    body = os.urandom(2 << 20)
    port = await connect_when_listening(remote, sandbox_id, 9000)

    async def send() -> None:
        for i in range(0, len(body), 100_000):
            await port.write(body[i : i + 100_000])
        await port.write_eof()

    sender = asyncio.create_task(send())
    try:
        echoed = await asyncio.wait_for(read_all(port), 120)
        await sender
    finally:
        sender.cancel()
        await port.aclose()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(body).digest()


async def test_an_unknown_sandbox_is_channel_closed(remote: RemoteNode) -> None:
    with pytest.raises(ChannelClosed):
        await remote.connect_port("nope", 8000)


async def test_the_socket_refuses_a_wrong_token(node: HostdNode) -> None:
    url = f"ws{node.url.removeprefix('http')}/node/v1/sandboxes/nope/ports/8000/connect"
    wrong = {"Authorization": "Bearer wrong"}
    async with connect(url, additional_headers=wrong, proxy=None) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    stranger = RemoteNode(node.name, node.url, "wrong")
    try:
        with pytest.raises(NodeUnavailable):
            await stranger.connect_port("nope", 8000)
    finally:
        await stranger.aclose()
