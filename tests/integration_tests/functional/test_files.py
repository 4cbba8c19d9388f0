"""File operations through the agent, in a real microVM."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from isorun_hostd.agent_channel import AgentError
from isorun_hostd.agent_channel.protocol import Empty, FileStat
from isorun_hostd.sandboxes import Runtime, Sandbox

from tests.framework.registry import Registry
from tests.framework.run import run

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]

BIG_BYTES = 50 * 1000 * 1000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox(runtime: Runtime, registry: Registry) -> AsyncIterator[Sandbox]:
    sb = await runtime.create(registry.ref("busybox:1.0"), mem_mib=512)
    yield sb
    await runtime.destroy(sb)


async def test_fifty_megabytes_round_trip_byte_identical(sandbox: Sandbox) -> None:
    data = os.urandom(BIG_BYTES)
    written = await sandbox.channel.write_file("/tmp/big.bin", data)
    assert written == BIG_BYTES
    stat, body = await sandbox.channel.read_file("/tmp/big.bin")
    assert stat.size == BIG_BYTES
    digest = hashlib.sha256()
    async for chunk in body:
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    inside = await run(sandbox, "sha256sum /tmp/big.bin; rm /tmp/big.bin")
    assert inside.text.split()[0] == hashlib.sha256(data).hexdigest()


async def test_read_range_and_binary_safety(sandbox: Sandbox) -> None:
    data = bytes(range(256)) * 4
    await sandbox.channel.write_file("/tmp/bin", data, mode=0o600)
    _, body = await sandbox.channel.read_file("/tmp/bin", offset=10, length=300)
    assert b"".join([c async for c in body]) == data[10:310]


async def test_mkdir_list_stat_chmod_rename_remove(sandbox: Sandbox) -> None:
    ch = sandbox.channel
    await ch.call("mkdir", Empty, path="/work/a/b", parents=True)
    await ch.write_file("/work/a/b/f.txt", b"hello")
    await ch.call("chmod", Empty, path="/work/a/b/f.txt", mode=0o751)
    stat = await ch.call("stat", FileStat, path="/work/a/b/f.txt")
    assert (stat.type, stat.size, stat.mode) == ("file", 5, 0o751)
    await ch.call("rename", Empty, src="/work/a/b/f.txt", dst="/work/a/g.txt")
    listing = await ch.list_dir("/work/a")
    assert [(e.name, e.type) for e in listing] == [("b", "dir"), ("g.txt", "file")]
    with pytest.raises(AgentError) as info:
        await ch.call("remove", Empty, path="/work/a")
    assert info.value.code == "not_empty"
    await ch.call("remove", Empty, path="/work/a", recursive=True)
    with pytest.raises(AgentError) as info:
        await ch.call("stat", FileStat, path="/work/a")
    assert info.value.code == "not_found" and "/work/a" in info.value.message


async def test_write_with_parents_and_append(sandbox: Sandbox) -> None:
    ch = sandbox.channel
    await ch.write_file("/srv/new/dir/log", b"one\n", parents=True)
    await ch.write_file("/srv/new/dir/log", b"two\n", append=True)
    _, body = await ch.read_file("/srv/new/dir/log")
    assert b"".join([c async for c in body]) == b"one\ntwo\n"


async def test_whiteout_image_hides_deleted_files(runtime: Runtime, registry: Registry) -> None:
    sb = await runtime.create(registry.ref("whiteout:1.0"))
    try:
        listing = await sb.channel.list_dir("/opt/data")
        assert [e.name for e in listing] == ["added.txt", "keep.txt"]
        with pytest.raises(AgentError) as info:
            await sb.channel.call("stat", FileStat, path="/opt/data/deleteme.txt")
        assert info.value.code == "not_found"
        result = await run(sb, "ls /opt/opaque")
        assert result.text.split() == ["new1", "new2"]
    finally:
        await runtime.destroy(sb)
