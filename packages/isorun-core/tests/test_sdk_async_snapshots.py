"""Fork, snapshots, hibernate and resume with the async SDK over isorun.testing.FakeBackend; the
twin of test_sdk_snapshots.py."""

from __future__ import annotations

import isorun
import pytest
from isorun import AsyncClient, AsyncSandbox, Sandbox
from isorun.testing import FakeBackend


async def test_fork_gives_clones_that_share_the_client_until_the_last_closes() -> None:
    fake = FakeBackend()
    sb = await AsyncSandbox.create(labels={"team": "ml"}, transport=fake, api_key=fake.api_key)
    await sb.files.write("/tmp/a", b"from source")
    clones = await sb.fork(2)
    assert [c.info.forked_from for c in clones] == [sb.id, sb.id]
    await sb.destroy()
    assert await clones[0].files.read("/tmp/a") == b"from source"
    for clone in clones:
        await clone.destroy()
    assert clones[1]._client.is_closed and fake.sandbox_ids == []


async def test_snapshot_restore_list_delete_and_collection() -> None:
    fake = FakeBackend()
    async with AsyncClient(transport=fake, api_key=fake.api_key) as client:
        sb = await AsyncSandbox.create(client=client)
        await sb.files.write("/tmp/state", b"saved")
        kept = await sb.snapshot(keep=True, name="base")
        dropped = await sb.snapshot()
        listed = [s.id async for s in client.snapshots.list(sandbox_id=sb.id)]
        assert listed == [dropped.id, kept.id]
        assert await client.snapshots.get(kept.id) == kept
        async with AsyncSandbox.from_snapshot(kept.id, client=client) as restored:
            assert restored.info.from_snapshot == kept.id
            assert await restored.files.read("/tmp/state") == b"saved"
        async with Sandbox.create(snapshot=kept.id, client=client) as again:
            assert again.info.from_snapshot == kept.id
        await sb.destroy()
        with pytest.raises(isorun.SnapshotNotFound):
            await client.snapshots.get(dropped.id)
        await client.snapshots.delete(kept.id)
        assert fake.snapshot_ids == []


async def test_hibernate_resume_and_auto_resume() -> None:
    fake = FakeBackend()
    fake.script_exec("echo hi", stdout="hi\n")
    async with AsyncSandbox.create(transport=fake, api_key=fake.api_key) as sb:
        assert (await sb.hibernate()).state == "hibernated"
        with pytest.raises(isorun.SandboxStateError):
            await sb.fork()
        assert (await sb.resume()).state == "running"
        await sb.hibernate()
        assert (await sb.exec("echo hi")).stdout == "hi\n"
        fake.fail_next(500, "snapshot_failed", "corrupt state")
        with pytest.raises(isorun.SnapshotFailed):
            await sb.resume()
