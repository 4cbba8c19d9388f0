"""Sandbox.files (sync): streamed uploads and downloads, listing, errors; async twin beside."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import isorun
import pytest
import respx
from isorun import Sandbox

Info = Callable[..., dict[str, Any]]
STAT = {
    "name": "a.txt",
    "path": "/w/a.txt",
    "type": "file",
    "size": 5,
    "mode": 0o644,
    "uid": 0,
    "gid": 0,
    "mtime_ms": 1,
    "link_target": None,
}


class RecordingTransport(httpx.BaseTransport):
    """Records when the request reaches the transport, then reads the body chunk by chunk."""

    def __init__(self, log: list[str], answer: httpx.Response) -> None:
        self.log = log
        self.answer = answer
        self.requests: list[httpx.Request] = []
        self.body = b""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "PUT":
            self.log.append("request sent")
            assert isinstance(request.stream, httpx.SyncByteStream)
            self.body = b"".join(request.stream)
            return self.answer
        return (
            httpx.Response(201, json=SANDBOX) if request.method == "POST" else httpx.Response(204)
        )


SANDBOX = {
    "id": "sb-1",
    "image": "python",
    "image_ref": "r@sha256:0",
    "state": "running",
    "vcpus": 1,
    "memory_mib": 1024,
    "created_at": "2025-01-01T00:00:00Z",
    "expires_at": "2025-01-01T00:05:00Z",
}


@pytest.fixture
def sb(api: respx.MockRouter, sandbox_json: Info) -> Iterator[Sandbox]:
    api.post("/v1/sandboxes").respond(201, json=sandbox_json())
    api.delete("/v1/sandboxes/sb-1").respond(204)
    with Sandbox() as sandbox:
        yield sandbox


def test_write_streams_a_generator_without_materialising_it() -> None:
    log: list[str] = []

    def chunks() -> Iterator[bytes]:
        for i in range(3):
            log.append(f"chunk {i} read")
            yield b"x" * 10

    transport = RecordingTransport(log, httpx.Response(200, json={"path": "/w/f", "bytes": 30}))
    with Sandbox(transport=transport) as sb:
        result = sb.files.write("/w/f", chunks(), mode=0o600, parents=True)
    assert log == ["request sent", "chunk 0 read", "chunk 1 read", "chunk 2 read"]
    assert transport.body == b"x" * 30
    put = transport.requests[1]
    assert "Content-Length" not in put.headers
    assert put.headers["Transfer-Encoding"] == "chunked"
    assert dict(put.url.params) == {"path": "/w/f", "mode": "384", "parents": "true"}
    assert (result.path, result.size_bytes) == ("/w/f", 30)


def test_write_streams_a_file_object_in_chunks() -> None:
    log: list[str] = []

    class Source(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            log.append(f"read {size}")
            return super().read(size)

    transport = RecordingTransport(log, httpx.Response(200, json={"path": "/w/f", "bytes": 70000}))
    with Sandbox(transport=transport) as sb:
        sb.files.write("/w/f", Source(b"y" * 70000))
    assert log == ["request sent", "read 65536", "read 65536", "read 65536"]
    assert transport.body == b"y" * 70000


def test_write_bytes_and_text(api: respx.MockRouter, sb: Sandbox) -> None:
    route = api.put("/v1/sandboxes/sb-1/files/content").respond(
        200, json={"path": "/w/a.txt", "bytes": 5}
    )
    sb.files.write("/w/a.txt", b"hello")
    assert route.calls.last.request.content == b"hello"
    assert route.calls.last.request.url.params["mode"] == "420"
    sb.files.write("/w/a.txt", "héllo")
    assert route.calls.last.request.content == "héllo".encode()


def test_write_is_not_retried(api: respx.MockRouter, sb: Sandbox) -> None:
    route = api.put("/v1/sandboxes/sb-1/files/content").respond(503, json={"code": "unavailable"})
    with pytest.raises(isorun.ServiceUnavailable):
        sb.files.write("/w/a", b"x")
    assert route.call_count == 1


def test_read_and_read_text(api: respx.MockRouter, sb: Sandbox) -> None:
    route = api.get("/v1/sandboxes/sb-1/files/content").respond(200, content="héllo".encode())
    assert sb.files.read("/w/a.txt") == "héllo".encode()
    assert sb.files.read_text("/w/a.txt") == "héllo"
    assert route.calls.last.request.url.params["path"] == "/w/a.txt"


def test_download_streams_to_a_local_file(
    api: respx.MockRouter, sb: Sandbox, tmp_path: Path
) -> None:
    log: list[str] = []

    def body() -> Iterator[bytes]:
        for i in range(3):
            log.append(f"chunk {i} sent")
            yield bytes([i]) * 1000

    api.get("/v1/sandboxes/sb-1/files/content").mock(
        side_effect=lambda request: httpx.Response(200, content=body())
    )
    dest = tmp_path / "out.bin"
    assert sb.files.download("/w/big", dest) == 3000
    assert dest.read_bytes() == b"\x00" * 1000 + b"\x01" * 1000 + b"\x02" * 1000
    assert log == ["chunk 0 sent", "chunk 1 sent", "chunk 2 sent"]


def test_download_of_a_missing_file_creates_nothing(
    api: respx.MockRouter, sb: Sandbox, tmp_path: Path
) -> None:
    api.get("/v1/sandboxes/sb-1/files/content").respond(404, json={"code": "not_found"})
    with pytest.raises(isorun.NotFound):
        sb.files.download("/w/none", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_list_stat_and_exists(api: respx.MockRouter, sb: Sandbox) -> None:
    api.get("/v1/sandboxes/sb-1/files").respond(200, json={"data": [STAT], "next_cursor": None})
    stat = api.get("/v1/sandboxes/sb-1/files/stat")
    stat.side_effect = [
        httpx.Response(200, json=STAT),
        httpx.Response(200, json=STAT),
        httpx.Response(404, json={"code": "not_found"}),
        httpx.Response(404, json={"code": "sandbox_not_found"}),
    ]
    [entry] = sb.files.list("/w")
    assert (entry.name, entry.size, entry.is_dir) == ("a.txt", 5, False)
    assert sb.files.stat("/w/a.txt").mode == 0o644
    assert sb.files.exists("/w/a.txt")
    assert not sb.files.exists("/w/none")
    with pytest.raises(isorun.SandboxNotFound):
        sb.files.exists("/w/a.txt")


def test_mkdir_remove_rename(api: respx.MockRouter, sb: Sandbox) -> None:
    mkdir = api.post("/v1/sandboxes/sb-1/files/mkdir").respond(204)
    remove = api.delete("/v1/sandboxes/sb-1/files").respond(204)
    rename = api.post("/v1/sandboxes/sb-1/files/rename").respond(204)
    sb.files.mkdir("/w/d")
    sb.files.remove("/w/d", recursive=True)
    sb.files.rename("/w/a", "/w/b")
    assert json.loads(mkdir.calls.last.request.content) == {"path": "/w/d", "parents": True}
    assert dict(remove.calls.last.request.url.params) == {"path": "/w/d", "recursive": "true"}
    assert json.loads(rename.calls.last.request.content) == {"src": "/w/a", "dst": "/w/b"}


def test_file_error_names_the_guest_code(api: respx.MockRouter, sb: Sandbox) -> None:
    api.post("/v1/sandboxes/sb-1/files/mkdir").respond(
        400, json={"code": "file_error", "status": 400, "detail": "EEXIST"}
    )
    with pytest.raises(isorun.FileError) as info:
        sb.files.mkdir("/w", parents=False)
    assert info.value.detail == "EEXIST"
