"""Fork, snapshots, hibernate and resume with the sync SDK over isorun.testing.FakeBackend;
test_sdk_async_snapshots.py is the twin. The backend's own behaviour is tested against real VMs
in backend/tests/test_api_snapshots.py and test_api_sdk_snapshots.py."""

from __future__ import annotations

import json

import isorun
import pytest
from isorun import Client, Sandbox, Snapshot
from isorun.testing import FakeBackend


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


def test_fork_gives_clones_that_share_the_client_until_the_last_closes(fake: FakeBackend) -> None:
    sb = Sandbox(labels={"team": "ml"}, transport=fake, api_key=fake.api_key)
    sb.files.write("/tmp/a", "from source")
    clones = sb.fork(2, timeout_s=60)
    assert [c.info.forked_from for c in clones] == [sb.id, sb.id]
    assert all(c.info.labels == {"team": "ml"} for c in clones)
    assert json.loads(fake.requests[-1].content) == {"count": 2, "timeout_s": 60}
    sb.destroy()  # the source's own client stays open for its clones
    assert clones[0].files.read_text("/tmp/a") == "from source"
    clones[0].files.write("/tmp/a", "mine")
    assert clones[1].files.read_text("/tmp/a") == "from source"
    for clone in clones:
        clone.destroy()
    assert clones[1]._client.is_closed and fake.sandbox_ids == []


def test_snapshot_restore_list_delete_and_collection(fake: FakeBackend) -> None:
    with Client(transport=fake, api_key=fake.api_key) as client:
        sb = Sandbox(client=client)
        sb.files.write("/tmp/state", "saved")
        kept = sb.snapshot(keep=True, name="base")
        dropped = sb.snapshot()
        assert isinstance(kept, Snapshot) and (kept.name, kept.keep) == ("base", True)
        assert kept.sandbox_id == sb.id and kept.id.startswith("snap-")
        assert [s.id for s in client.snapshots.list(sandbox_id=sb.id)] == [dropped.id, kept.id]
        assert client.snapshots.get(kept.id) == kept

        with Sandbox.from_snapshot(kept.id, client=client, labels={"from": "snap"}) as restored:
            assert restored.info.from_snapshot == kept.id
            assert restored.files.read_text("/tmp/state") == "saved"
        creates = [r for r in fake.requests if (r.method, r.url.path) == ("POST", "/v1/sandboxes")]
        body = json.loads(creates[-1].content)
        assert "image" not in body and body["snapshot"] == kept.id

        sb.destroy()  # collects the snapshot not marked keep
        with pytest.raises(isorun.SnapshotNotFound):
            client.snapshots.get(dropped.id)
        client.snapshots.delete(kept.id)
        with pytest.raises(isorun.SnapshotNotFound):
            Sandbox(snapshot=kept.id, client=client)
        assert fake.snapshot_ids == []


def test_hibernate_resume_and_auto_resume(fake: FakeBackend) -> None:
    fake.script_exec("echo hi", stdout="hi\n")
    with Sandbox(transport=fake, api_key=fake.api_key, auto_hibernate_s=60) as sb:
        assert sb.info.auto_hibernate_s == 60
        info = sb.hibernate()
        assert info.state == "hibernated" and info.hibernated_at is not None
        with pytest.raises(isorun.SandboxStateError):
            sb.fork()
        with pytest.raises(isorun.SandboxStateError):
            sb.snapshot()
        assert sb.resume().state == "running"
        sb.hibernate()
        assert sb.exec("echo hi").stdout == "hi\n"  # resumed first
        assert sb.refresh().state == "running"


def test_snapshot_errors_are_typed(fake: FakeBackend) -> None:
    with Sandbox(transport=fake, api_key=fake.api_key) as sb:
        fake.fail_next(500, "snapshot_failed", "disk full")
        with pytest.raises(isorun.SnapshotFailed) as failed:
            sb.snapshot()
        assert isinstance(failed.value, isorun.ServerError) and not failed.value.retryable
        fake.fail_next(429, "quota_exceeded")
        with pytest.raises(isorun.QuotaExceeded):
            sb.fork(3)
