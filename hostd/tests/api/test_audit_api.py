"""The node API's audit routes without VMs: a sandbox's entries in pages, and verify naming the
entry that was edited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from isorun_hostd.api import create_app
from isorun_hostd.config import Settings
from isorun_hostd.sandboxes import Runtime

TOKEN = "node-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(Settings(state_dir=tmp_path / "state", run_dir=tmp_path / "run"))
    rt.audit.open()  # what Runtime.start does first; the rest needs QEMU
    for n in range(5):
        rt.audit.record(f"sb-{n % 2}", "exec.end", {"pid": n, "exit_code": 0})
    yield rt
    rt.audit.close()


def test_entries_of_one_sandbox_in_pages(runtime: Runtime) -> None:
    client = TestClient(create_app(runtime, TOKEN))
    page = client.get("/node/v1/audit", params={"sandbox_id": "sb-0", "limit": 2}, headers=AUTH)
    assert page.status_code == 200
    body = page.json()
    assert [e["seq"] for e in body["data"]] == [1, 3]
    assert body["cursor"] == 3
    rest = client.get(
        "/node/v1/audit", params={"sandbox_id": "sb-0", "after": 3}, headers=AUTH
    ).json()
    assert ([e["seq"] for e in rest["data"]], rest["cursor"]) == ([5], None)
    assert set(rest["data"][0]) == {
        "seq",
        "time",
        "sandbox_id",
        "kind",
        "fields",
        "prev_mac",
        "mac",
    }


def test_verify_names_the_edited_entry(runtime: Runtime) -> None:
    client = TestClient(create_app(runtime, TOKEN))
    assert client.get("/node/v1/audit/verify", headers=AUTH).json() == {
        "ok": True,
        "checked": 5,
        "first_bad": None,
    }
    chain = runtime.audit.chain_path
    chain.write_bytes(chain.read_bytes().replace(b'"pid":1', b'"pid":9'))
    report = client.get("/node/v1/audit/verify", headers=AUTH).json()
    assert report["ok"] is False
    assert (report["first_bad"]["seq"], report["first_bad"]["reason"]) == (2, "altered")
