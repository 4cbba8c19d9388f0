"""The `isorun` SDK's fork, snapshot, hibernate and resume against the real backend over a
loopback socket (SDK -> backend -> hostd -> VM), on SQLite and PostgreSQL: the calls a user
makes, end to end, with one busybox sandbox and what it spawns."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from api_support import BOTH_ENGINES
from isorun import AsyncClient, AsyncSandbox, Sandbox, SandboxStateError, SnapshotNotFound

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session"), BOTH_ENGINES]


async def test_fork_snapshot_hibernate_resume_through_the_sdk(
    http: httpx.AsyncClient, key: str
) -> None:
    async with AsyncClient(api_key=key, api_url=str(http.base_url)) as client:
        async with AsyncSandbox.create("busybox", memory_mib=128, client=client) as sb:
            await sb.exec("echo source > /tmp/who", check=True)
            [clone] = await sb.fork()
            async with clone:
                assert clone.info.forked_from == sb.id
                await clone.exec("echo clone > /tmp/who", check=True)
                assert (await sb.exec("cat /tmp/who")).stdout == "source\n"
                assert (await clone.exec("cat /tmp/who")).stdout == "clone\n"

            snap = await sb.snapshot(name="e2e")
            assert [s.id async for s in client.snapshots.list(sandbox_id=sb.id)] == [snap.id]
            async with AsyncSandbox.from_snapshot(snap.id, client=client) as restored:
                assert restored.info.from_snapshot == snap.id
                assert (await restored.exec("cat /tmp/who")).stdout == "source\n"

            assert (await sb.hibernate()).state == "hibernated"
            with pytest.raises(SandboxStateError) as refused:
                await sb.fork()
            assert refused.value.state == "hibernated"
            assert (await sb.resume()).state == "running"
            await sb.hibernate()
            assert (await sb.exec("cat /tmp/who")).stdout == "source\n"  # resumed first
        with pytest.raises(SnapshotNotFound):  # collected with its sandbox
            await client.snapshots.get(snap.id)


async def test_the_sync_sdk_forks_and_hibernates(http: httpx.AsyncClient, key: str) -> None:
    def scenario() -> None:
        with Sandbox("busybox", memory_mib=128, api_key=key, api_url=str(http.base_url)) as sb:
            sb.exec("echo kept > /tmp/f", check=True)
            clones = sb.fork(1)
            assert clones[0].exec("cat /tmp/f").stdout == "kept\n"
            clones[0].destroy()
            assert sb.hibernate().state == "hibernated"
            assert sb.exec("cat /tmp/f").stdout == "kept\n"
            assert sb.refresh().state == "running"

    await asyncio.to_thread(scenario)
