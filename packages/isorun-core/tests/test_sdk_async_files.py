"""AsyncSandbox.files: the async twin of test_sdk_files.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import isorun
import pytest
import respx
from isorun import AsyncSandbox

Info = Callable[..., dict[str, Any]]
STAT = {"name": "d", "path": "/w/d", "type": "dir", "size": 4096, "mode": 0o755}


class RecordingTransport(httpx.AsyncBaseTransport):
    """Records when the request reaches the transport, then reads the body chunk by chunk."""

    def __init__(self, log: list[str], sandbox: dict[str, Any]) -> None:
        self.log = log
        self.sandbox = sandbox
        self.body = b""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.log.append("request sent")
            assert isinstance(request.stream, httpx.AsyncByteStream)
            self.body = b"".join([chunk async for chunk in request.stream])
            return httpx.Response(200, json={"path": "/w/f", "bytes": len(self.body)})
        if request.method == "POST":
            return httpx.Response(201, json=self.sandbox)
        return httpx.Response(204)


@pytest.fixture
async def sb(api: respx.MockRouter, sandbox_json: Info) -> AsyncIterator[AsyncSandbox]:
    api.post("/v1/sandboxes").respond(201, json=sandbox_json())
    api.delete("/v1/sandboxes/sb-1").respond(204)
    async with AsyncSandbox.create() as sandbox:
        yield sandbox


async def test_write_streams_an_async_generator_without_materialising_it(
    sandbox_json: Info,
) -> None:
    log: list[str] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            log.append(f"chunk {i} read")
            yield b"x" * 10

    transport = RecordingTransport(log, sandbox_json())
    async with AsyncSandbox.create(transport=transport) as sb:
        result = await sb.files.write("/w/f", chunks())
    assert log == ["request sent", "chunk 0 read", "chunk 1 read", "chunk 2 read"]
    assert (transport.body, result.size_bytes) == (b"x" * 30, 30)


async def test_write_streams_a_sync_iterator_too(sandbox_json: Info) -> None:
    log: list[str] = []

    def chunks() -> Iterator[bytes]:
        for i in range(2):
            log.append(f"chunk {i} read")
            yield b"y"

    transport = RecordingTransport(log, sandbox_json())
    async with AsyncSandbox.create(transport=transport) as sb:
        await sb.files.write("/w/f", chunks())
    assert log == ["request sent", "chunk 0 read", "chunk 1 read"]


async def test_write_bytes_is_not_retried(api: respx.MockRouter, sb: AsyncSandbox) -> None:
    route = api.put("/v1/sandboxes/sb-1/files/content").respond(503, json={"code": "unavailable"})
    with pytest.raises(isorun.ServiceUnavailable):
        await sb.files.write("/w/a", b"x", parents=True)
    assert route.call_count == 1
    assert route.calls.last.request.url.params["parents"] == "true"


async def test_read_and_read_text(api: respx.MockRouter, sb: AsyncSandbox) -> None:
    api.get("/v1/sandboxes/sb-1/files/content").respond(200, content=b"hi")
    assert await sb.files.read("/w/a") == b"hi"
    assert await sb.files.read_text("/w/a") == "hi"


async def test_download_streams_to_a_local_file(
    api: respx.MockRouter, sb: AsyncSandbox, tmp_path: Path
) -> None:
    log: list[str] = []

    async def body() -> AsyncIterator[bytes]:
        for i in range(3):
            log.append(f"chunk {i} sent")
            yield bytes([i]) * 10

    api.get("/v1/sandboxes/sb-1/files/content").mock(
        side_effect=lambda request: httpx.Response(200, content=body())
    )
    dest = tmp_path / "out.bin"
    assert await sb.files.download("/w/big", dest) == 30
    assert dest.read_bytes() == b"\x00" * 10 + b"\x01" * 10 + b"\x02" * 10
    assert log == ["chunk 0 sent", "chunk 1 sent", "chunk 2 sent"]


async def test_list_stat_exists(api: respx.MockRouter, sb: AsyncSandbox) -> None:
    api.get("/v1/sandboxes/sb-1/files").respond(200, json={"data": [STAT], "next_cursor": None})
    stat = api.get("/v1/sandboxes/sb-1/files/stat")
    stat.side_effect = [
        httpx.Response(200, json=STAT),
        httpx.Response(404, json={"code": "not_found"}),
    ]
    [entry] = await sb.files.list("/w")
    assert entry.is_dir
    assert await sb.files.exists("/w/d")
    assert not await sb.files.exists("/w/none")


async def test_mkdir_remove_rename(api: respx.MockRouter, sb: AsyncSandbox) -> None:
    mkdir = api.post("/v1/sandboxes/sb-1/files/mkdir").respond(204)
    remove = api.delete("/v1/sandboxes/sb-1/files").respond(204)
    rename = api.post("/v1/sandboxes/sb-1/files/rename").respond(204)
    await sb.files.mkdir("/w/d", parents=False)
    await sb.files.remove("/w/d")
    await sb.files.rename("/w/a", "/w/b")
    assert json.loads(mkdir.calls.last.request.content) == {"path": "/w/d", "parents": False}
    assert remove.calls.last.request.url.params["recursive"] == "false"
    assert json.loads(rename.calls.last.request.content) == {"src": "/w/a", "dst": "/w/b"}
