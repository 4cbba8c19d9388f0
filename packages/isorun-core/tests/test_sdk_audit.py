"""`client.audit` with the sync SDK over isorun.testing.FakeBackend; test_sdk_async_audit.py is
the twin. The real chain and its verification: hostd/tests/audit/, backend/tests/test_api_audit.py
and tests/integration_tests/functional/test_audit.py."""

from __future__ import annotations

import itertools

import isorun
import pytest
from isorun import AuditEntry, Client, Sandbox
from isorun.testing import FakeBackend


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


def test_a_sandbox_s_entries_in_pages_also_after_its_delete(fake: FakeBackend) -> None:
    fake.script_exec(["echo", "hi"], stdout="hi\n")
    with Client(transport=fake, api_key=fake.api_key) as client:
        sb = Sandbox(client=client)
        sb.exec(["echo", "hi"])
        sb.destroy()
        entries = list(client.audit.list(sb.id, page_size=2))
        with pytest.raises(isorun.SandboxNotFound):
            list(client.audit.list("sb-none"))
    assert all(isinstance(e, AuditEntry) for e in entries)
    assert [e.kind for e in entries] == [
        "sandbox.create",
        "exec.start",
        "exec.end",
        "sandbox.destroy",
    ]
    assert entries[1].fields["command"] == ["echo", "hi"]
    assert all(b.prev_mac == a.mac for a, b in itertools.pairwise(entries))
    pages = [r for r in fake.requests if r.url.path == f"/v1/sandboxes/{sb.id}/audit"]
    assert [r.url.params.get("cursor") for r in pages] == [None, "2"]


def test_verify_names_the_first_bad_entry(fake: FakeBackend) -> None:
    with Client(transport=fake, api_key=fake.api_key) as client:
        Sandbox(client=client).destroy()
        intact = client.audit.verify()
        fake.break_audit(2, "removed")
        broken = client.audit.verify()
    assert intact.ok and intact.first_bad is None and intact.nodes[0].checked == 2
    assert not broken.ok and broken.first_bad is not None
    node, bad = broken.first_bad
    assert (node, bad.seq, bad.reason) == ("fake", 2, "removed")
