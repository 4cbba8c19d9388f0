"""Files over the API, in one busybox sandbox for the module; big transfers over a real socket."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from api_support import assert_problem, auth

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]

BIG_BYTES = 50 * 1000 * 1000
CHUNK_BYTES = 1 << 20


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def path(client: httpx.AsyncClient, key: str) -> AsyncIterator[str]:
    """``/v1/sandboxes/<id>`` of the module's busybox sandbox."""
    response = await client.post(
        "/v1/sandboxes", json={"image": "busybox", "memory_mib": 512}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    yield f"/v1/sandboxes/{response.json()['id']}"
    await client.delete(f"/v1/sandboxes/{response.json()['id']}", headers=auth(key))


async def test_fifty_megabytes_stream_up_and_down_byte_identical(
    http: httpx.AsyncClient, client: httpx.AsyncClient, key: str, path: str
) -> None:
    data = os.urandom(BIG_BYTES)
    target = {"path": "/tmp/big.bin"}
    headers = auth(key)

    async def body() -> AsyncIterator[bytes]:
        """Half the file, then wait until the guest holds some of it (the agent writes into a
        temp file beside the target, renamed at the end): a backend that read the whole body
        before writing would never get there."""
        half = BIG_BYTES // 2
        for offset in range(0, half, CHUNK_BYTES):
            yield data[offset : min(offset + CHUNK_BYTES, half)]
        for _ in range(300):
            listing = await client.get(f"{path}/files", params={"path": "/tmp"}, headers=headers)
            partial = [e for e in listing.json()["data"] if e["name"].startswith(".isorun-")]
            if partial and partial[0]["size"] > 0:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("nothing reached the guest before the body ended")
        for offset in range(half, BIG_BYTES, CHUNK_BYTES):
            yield data[offset : offset + CHUNK_BYTES]

    response = await http.put(
        f"{path}/files/content", params={**target, "mode": 0o600}, content=body(), headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"path": "/tmp/big.bin", "bytes": BIG_BYTES}

    digest = hashlib.sha256()
    async with http.stream(
        "GET", f"{path}/files/content", params=target, headers=headers
    ) as download:
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/octet-stream"
        async for chunk in download.aiter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()

    stat = (await client.get(f"{path}/files/stat", params=target, headers=headers)).json()
    assert (stat["size"], stat["mode"], stat["type"]) == (BIG_BYTES, 0o600, "file")
    response = await client.delete(f"{path}/files", params=target, headers=headers)
    assert response.status_code == 204


async def test_mkdir_write_list_stat_rename_remove(
    client: httpx.AsyncClient, key: str, path: str
) -> None:
    headers = auth(key)
    response = await client.post(f"{path}/files/mkdir", json={"path": "/work/a/b"}, headers=headers)
    assert response.status_code == 204
    response = await client.put(
        f"{path}/files/content",
        params={"path": "/work/a/b/f.txt"},
        content=b"hello",
        headers=headers,
    )
    assert response.json() == {"path": "/work/a/b/f.txt", "bytes": 5}
    response = await client.post(
        f"{path}/files/rename",
        json={"src": "/work/a/b/f.txt", "dst": "/work/a/g.txt"},
        headers=headers,
    )
    assert response.status_code == 204
    listing = (
        await client.get(f"{path}/files", params={"path": "/work/a"}, headers=headers)
    ).json()
    assert [(e["name"], e["type"]) for e in listing["data"]] == [("b", "dir"), ("g.txt", "file")]
    assert listing["next_cursor"] is None
    stat = (
        await client.get(f"{path}/files/stat", params={"path": "/work/a/g.txt"}, headers=headers)
    ).json()
    assert stat == {
        "name": "g.txt",
        "path": "/work/a/g.txt",
        "type": "file",
        "size": 5,
        "mode": 0o644,
        "uid": 0,
        "gid": 0,
        "mtime_ms": stat["mtime_ms"],
        "link_target": None,
    }
    content = await client.get(
        f"{path}/files/content", params={"path": "/work/a/g.txt"}, headers=headers
    )
    assert content.content == b"hello"
    response = await client.delete(f"{path}/files", params={"path": "/work/a"}, headers=headers)
    assert_problem(response, 400, "file_error")
    response = await client.delete(
        f"{path}/files", params={"path": "/work", "recursive": True}, headers=headers
    )
    assert response.status_code == 204
    response = await client.get(f"{path}/files/stat", params={"path": "/work"}, headers=headers)
    assert_problem(response, 404, "not_found")


async def test_write_with_parents_creates_the_folders(
    client: httpx.AsyncClient, key: str, path: str
) -> None:
    headers = auth(key)
    params = {"path": "/deep/er/x.txt"}
    response = await client.put(
        f"{path}/files/content", params=params, content=b"x", headers=headers
    )
    assert_problem(response, 404, "not_found")
    response = await client.put(
        f"{path}/files/content", params={**params, "parents": True}, content=b"x", headers=headers
    )
    assert response.status_code == 200


async def test_missing_files_and_guest_refusals(
    client: httpx.AsyncClient, key: str, path: str
) -> None:
    headers = auth(key)
    for response in (
        await client.get(f"{path}/files/content", params={"path": "/nope"}, headers=headers),
        await client.get(f"{path}/files", params={"path": "/nope"}, headers=headers),
        await client.post(
            f"{path}/files/rename", json={"src": "/nope", "dst": "/nope2"}, headers=headers
        ),
    ):
        assert_problem(response, 404, "not_found")
    response = await client.get(f"{path}/files", params={"path": "/etc/passwd"}, headers=headers)
    problem = assert_problem(response, 400, "file_error")
    assert "not_a_directory" in problem["detail"]
    response = await client.post(
        f"{path}/files/mkdir", json={"path": "/tmp", "parents": False}, headers=headers
    )
    assert "exists" in assert_problem(response, 400, "file_error")["detail"]


async def test_relative_or_missing_paths_are_refused(
    client: httpx.AsyncClient, key: str, path: str
) -> None:
    headers = auth(key)
    for response in (
        await client.get(f"{path}/files/content", params={"path": "etc/passwd"}, headers=headers),
        await client.get(f"{path}/files/stat", params={"path": "../x"}, headers=headers),
        await client.put(
            f"{path}/files/content", params={"path": "x"}, content=b"", headers=headers
        ),
        await client.post(f"{path}/files/mkdir", json={"path": "rel"}, headers=headers),
        await client.post(
            f"{path}/files/rename", json={"src": "/tmp", "dst": "tmp2"}, headers=headers
        ),
    ):
        assert_problem(response, 400, "invalid_request")
    response = await client.get(f"{path}/files/stat", headers=headers)
    assert assert_problem(response, 422, "invalid_request")["errors"][0]["field"] == "path"
