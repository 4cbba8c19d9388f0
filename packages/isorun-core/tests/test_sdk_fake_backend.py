"""isorun.testing.FakeBackend with the sync SDK; test_sdk_async_fake_backend.py is the twin."""

from __future__ import annotations

import io

import isorun
import pytest
from isorun import Client, OutputEvent, Sandbox
from isorun.testing import FakeBackend


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


def test_the_module_docstring_example_works(fake: FakeBackend) -> None:
    fake.script_exec("python -V", stdout="Python 3.12.0\n")
    with Sandbox("python", transport=fake, api_key=fake.api_key) as sb:
        assert sb.exec("python -V").stdout == "Python 3.12.0\n"
        sb.files.write("/tmp/a.txt", "hi")
    assert fake.exec_calls[0].command == "python -V"
    assert fake.sandbox_ids == []


def test_exec_scripted_unscripted_and_streamed(fake: FakeBackend) -> None:
    fake.script_exec(["pip", "install", "x"], stdout="ok\n", stderr="warn\n", exit_code=1)
    with Sandbox(transport=fake, api_key=fake.api_key) as sb:
        result = sb.exec(["pip", "install", "x"], cwd="/w", env={"A": "1"}, timeout_s=5)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "ok\n", "warn\n")
        assert sb.exec("ls").exit_code == 127
        seen: list[str] = []
        assert sb.exec(["pip", "install", "x"], on_stdout=seen.append).stdout == "ok\n"
        assert seen == ["ok\n"]
        outputs = [e for e in sb.exec_stream(["pip", "install", "x"]) if isinstance(e, OutputEvent)]
        assert [(e.stream, e.data) for e in outputs] == [("stdout", b"ok\n"), ("stderr", b"warn\n")]
        assert len(sb.processes()) == 4
        sb.signal(sb.processes()[0].pid, 15)
        with pytest.raises(isorun.NotFound):
            sb.signal(1, 15)
    call = fake.exec_calls[0]
    assert (call.cwd, call.env, call.timeout_s) == ("/w", {"A": "1"}, 5)


def test_files_round_trip(fake: FakeBackend) -> None:
    with Sandbox(transport=fake, api_key=fake.api_key) as sb:
        with pytest.raises(isorun.NotFound):
            sb.files.write("/w/a/b.txt", b"x")
        assert sb.files.write("/w/a/b.txt", io.BytesIO(b"data"), parents=True).size_bytes == 4
        assert sb.files.read("/w/a/b.txt") == b"data"
        assert [e.name for e in sb.files.list("/w")] == ["a"]
        assert sb.files.stat("/w/a").is_dir
        sb.files.rename("/w/a", "/w/c")
        assert sb.files.read_text("/w/c/b.txt") == "data"
        assert not sb.files.exists("/w/a/b.txt")
        with pytest.raises(isorun.FileError, match="ENOTEMPTY"):
            sb.files.remove("/w/c")
        sb.files.remove("/w/c", recursive=True)
        assert not sb.files.exists("/w/c")
        sb.files.mkdir("/x/y")
        with pytest.raises(isorun.FileError, match="EEXIST"):
            sb.files.mkdir("/x/y", parents=False)
        with pytest.raises(isorun.InvalidRequest):
            sb.files.read("relative")


def test_sandboxes_lifecycle_list_and_labels(fake: FakeBackend) -> None:
    with Client(transport=fake, api_key=fake.api_key) as client:
        first = Sandbox(client=client, labels={"team": "ml"})
        Sandbox(client=client)
        assert [i.id for i in Sandbox.list(client=client, labels={"team": "ml"})] == [first.id]
        assert len(list(Sandbox.list(client=client, page_size=1))) == 2
        assert Sandbox.connect(first.id, client=client).info == first.info
        assert first.keep_alive(3600).expires_at > first.info.created_at
        first.destroy()
        with pytest.raises(isorun.SandboxNotFound):
            first.refresh()


def test_idempotency_key_returns_the_same_sandbox(fake: FakeBackend) -> None:
    fake.fail_next(503, "unavailable")
    with Client(transport=fake, api_key=fake.api_key, retry_backoff_s=0) as client:
        sb = Sandbox(client=client)
    assert fake.sandbox_ids == [sb.id]
    posts = [r for r in fake.requests if r.method == "POST"]
    assert len(posts) == 2
    assert posts[0].headers["Idempotency-Key"] == posts[1].headers["Idempotency-Key"]


def test_a_wrong_key_is_refused(fake: FakeBackend) -> None:
    with pytest.raises(isorun.AuthenticationError):
        Sandbox(transport=fake, api_key="isr_wrong")


def test_shells_cannot_be_attached_through_a_fake(fake: FakeBackend) -> None:
    # An httpx transport carries no WebSocket: attach says so rather than dialling the network.
    with Sandbox(transport=fake, api_key=fake.api_key) as sb, pytest.raises(isorun.UsageError):
        sb.shells.attach("sh-000000000000")
