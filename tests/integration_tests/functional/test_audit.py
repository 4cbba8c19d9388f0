"""The audit log end to end (issue 6, item 4): `isorun up` (real VMs), a sandbox made and run
through the SDK, its entries read back with `client.audit.list` and `isorun audit show`, then
the node's chain edited and cut on disk: `isorun audit verify` names the entry each time. And at
hostd level, the entries of every lifecycle step: snapshot, fork, hibernate, resume, restore."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from isorun import Client, Sandbox
from isorun_hostd.sandboxes import Runtime

from tests.framework.isorun_up import Up, start_up

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with start_up(tmp_path_factory.mktemp("isorun-up")) as running:
        yield running


def test_entries_are_served_and_tampering_is_named(up: Up) -> None:
    with (
        Client(api_url=up.url, api_key=up.key) as client,
        Sandbox("python", memory_mib=256, client=client) as sandbox,
    ):
        assert sandbox.exec(["python3", "-c", "print(6 * 7)"]).stdout == "42\n"
        entries = list(client.audit.list(sandbox.id))
    assert [e.kind for e in entries] == ["sandbox.create", "exec.start", "exec.end"]
    start, end = entries[1], entries[2]
    assert start.fields["command"] == ["python3", "-c", "print(6 * 7)"]
    assert (end.fields["exit_code"], end.fields["pid"]) == (0, start.fields["pid"])
    assert end.fields["duration_ms"] >= 0

    shown = up.cli("audit", "show", sandbox.id, "--json")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [line["kind"] for line in lines][-1] == "sandbox.destroy"  # deleted: still served
    assert lines[2]["mac"] == end.mac

    verified = up.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "intact" in verified.stdout

    chain = up.data_dir / "hostd" / "audit" / "chain.jsonl"
    original = chain.read_bytes()
    # A zero exit turned into a failure: the MAC no longer matches.
    edited = [
        line.replace(b'"exit_code":0', b'"exit_code":1')
        if f'"seq":{end.seq},'.encode() in line
        else line
        for line in original.splitlines(keepends=True)
    ]
    chain.write_bytes(b"".join(edited))
    tampered = up.cli("audit", "verify")
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert f"entry {end.seq}: altered" in tampered.stdout

    # The exec's start removed from the record.
    chain.write_bytes(
        b"".join(
            line
            for line in original.splitlines(keepends=True)
            if f'"seq":{start.seq},'.encode() not in line
        )
    )
    removed = up.cli("audit", "verify")
    assert removed.returncode == 1, removed.stdout + removed.stderr
    assert f"entry {start.seq}: removed" in removed.stdout
    chain.write_bytes(original)


@pytest.mark.asyncio(loop_scope="session")
async def test_every_lifecycle_step_is_an_entry(runtime: Runtime, python_ref: str) -> None:
    sandbox = await runtime.create(python_ref)
    snapshot = await runtime.snapshot(sandbox)
    (clone,) = await runtime.fork(sandbox, 1)
    await runtime.hibernate(sandbox)
    resumed = await runtime.resume(sandbox.id)
    restored = await runtime.from_snapshot(snapshot.snapshot_id)
    for done in (resumed, clone, restored):
        await runtime.destroy(done)
    runtime.snapshots.delete(snapshot.snapshot_id)

    def kinds(sandbox_id: str) -> list[str]:
        return [entry.kind for entry in runtime.audit.entries(sandbox_id)]

    assert kinds(sandbox.id) == [
        "sandbox.create",
        "sandbox.snapshot",
        "sandbox.fork",
        "sandbox.hibernate",
        "sandbox.destroy",  # its VM: a hibernated sandbox holds none
        "sandbox.resume",
        "sandbox.destroy",
    ]
    (forked, _) = runtime.audit.entries(clone.id)
    assert forked.fields["forked_from"] == sandbox.id
    (from_snapshot, _) = runtime.audit.entries(restored.id)
    assert from_snapshot.fields["snapshot_id"] == snapshot.snapshot_id
    assert runtime.audit.verify().ok
