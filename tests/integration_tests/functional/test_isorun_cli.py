"""The `isorun` CLI end to end: `isorun up --local-images` in a subprocess (temp data dir, free
port, real VMs), its first key, `keys` against the same database while it runs, `run`, the
landing page's examples/spawn.py, `usage`, and a SIGTERM that leaves no QEMU or registry behind.

One `up` serves the module; the SIGTERM test stops it and so runs last (file order).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from isorun import AuthenticationError, Sandbox, SandboxStateError

from tests.framework.isorun_up import CLI, COMMAND_TIMEOUT_S, STOP_TIMEOUT_S, Up, start_up

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[3]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and not cmdline.startswith(tuple(CLI)):
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with start_up(tmp_path_factory.mktemp("isorun-up")) as running:
        yield running


def _list_works(up: Up, key: str) -> bool:
    try:
        list(Sandbox.list(api_url=up.url, api_key=key))
    except AuthenticationError:
        return False
    return True


def test_up_answers_health_and_its_first_key_works(up: Up) -> None:
    health = httpx.get(f"{up.url}/v1/health", timeout=10).json()
    assert health["status"] == "ok"
    assert _list_works(up, up.key)
    # Stored hashed: the plain key is nowhere in the database.
    assert up.key.encode() not in (up.data_dir / "isorun.db").read_bytes()


def test_keys_create_and_revoke_while_up_runs(up: Up) -> None:
    created = up.cli("keys", "create", "--name", "ci", "--data-dir", str(up.data_dir))
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    match = re.search(r"created (key-[0-9a-f]+)", created.stderr)
    assert match, created.stderr
    assert _list_works(up, key)

    listing = up.cli("keys", "ls", "--data-dir", str(up.data_dir))
    assert listing.returncode == 0 and match.group(1) in listing.stdout
    assert key not in listing.stdout

    revoked = up.cli("keys", "revoke", match.group(1), "--data-dir", str(up.data_dir))
    assert revoked.returncode == 0, revoked.stderr
    assert not _list_works(up, key)
    assert _list_works(up, up.key)


def test_run_prints_the_result_and_exits_with_the_command_status(up: Up) -> None:
    ok = up.cli("run", "python", "--", "python", "-c", "print(2**32)")
    assert (ok.returncode, ok.stdout) == (0, "4294967296\n"), ok.stderr
    failing = up.cli("run", "python", "--", "python3", "-c", "import sys; sys.exit(7)")
    assert failing.returncode == 7, failing.stderr
    assert up.cli("ls").stdout.splitlines()[1:] == []  # both destroyed
    usage = up.cli("usage")
    assert usage.returncode == 0, usage.stderr
    assert len(usage.stdout.splitlines()) >= 4  # header, two sandboxes, total


def test_spawn_example(up: Up) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "spawn.py")],
        env=up.env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "4294967296\n"), result.stderr


LANDING_SPAWN = """\
from isorun import Sandbox
sb = await Sandbox.create()
r = await sb.run("python", "-c", "'2**32'")
await sb.destroy()
print("spawn exit", r.exit_code, r.ok)
"""


def test_landing_page_spawn_verbatim_in_an_async_repl(up: Up) -> None:
    """The landing page's three lines use top-level await: run them as written in Python's
    asyncio REPL, which allows it."""
    result = subprocess.run(
        [sys.executable, "-m", "asyncio"],
        input=LANDING_SPAWN,
        env=up.env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "spawn exit 0 True" in output, output
    assert "Traceback" not in output, output


def test_fork_snapshot_hibernate_resume_and_run_from_a_snapshot(up: Up) -> None:
    sandbox = Sandbox("python", memory_mib=256, api_url=up.url, api_key=up.key)
    try:
        sandbox.exec("echo saved > /tmp/f", check=True)
        forked = up.cli("fork", sandbox.id, "-n", "1")
        assert forked.returncode == 0, forked.stderr
        [clone_id] = forked.stdout.split()
        clone = Sandbox.connect(clone_id, api_url=up.url, api_key=up.key)
        assert clone.info.forked_from == sandbox.id
        clone.destroy()

        saved = up.cli("snapshot", "create", sandbox.id, "--name", "cli")
        assert saved.returncode == 0, saved.stderr
        snapshot_id = saved.stdout.strip()
        listing = up.cli("snapshot", "ls", "--sandbox", sandbox.id)
        assert listing.returncode == 0 and snapshot_id in listing.stdout and "cli" in listing.stdout
        ran = up.cli("run", "--snapshot", snapshot_id, "--", "cat", "/tmp/f")
        assert (ran.returncode, ran.stdout) == (0, "saved\n"), ran.stderr

        hibernated = up.cli("hibernate", sandbox.id)
        assert hibernated.stdout.split() == [sandbox.id, "hibernated"], hibernated.stderr
        resumed = up.cli("resume", sandbox.id)
        assert resumed.stdout.split() == [sandbox.id, "running"], resumed.stderr
        assert sandbox.exec("cat /tmp/f").stdout == "saved\n"

        assert up.cli("snapshot", "rm", snapshot_id).returncode == 0
        again = up.cli("snapshot", "rm", snapshot_id)
        assert again.returncode == 125 and "snapshot_not_found" in again.stderr
    finally:
        sandbox.destroy()
    assert up.cli("ls").stdout.splitlines()[1:] == []


def test_sigterm_stops_up_with_nothing_left(up: Up) -> None:
    # A sandbox still running when the signal arrives must be destroyed by the shutdown.
    sandbox = Sandbox("python", api_url=up.url, api_key=up.key)
    sandbox.close()
    log = up.stderr.read_text()
    registry_pid = re.search(r"\(pid (\d+)\)", log)
    assert registry_pid, log
    assert _processes_mentioning(str(up.data_dir)), "no QEMU or registry seen before the stop"

    assert up.stop() == 0, up.stderr.read_text()
    assert not Path(f"/proc/{registry_pid.group(1)}").exists()
    assert _processes_mentioning(str(up.data_dir)) == []


def test_sigkill_then_restart_leaves_nothing_orphaned(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A killed `up` takes its VMs and registry along; the next `up` on the same data dir
    shows the sandbox stopped, refuses exec on it, and has no orphan of the old one."""
    data_dir = tmp_path_factory.mktemp("isorun-killed")
    with start_up(data_dir) as first:
        sandbox = Sandbox("python", api_url=first.url, api_key=first.key)
        sandbox.close()
        assert _processes_mentioning(str(data_dir))
        first.process.kill()
        first.process.wait(STOP_TIMEOUT_S)
        deadline = time.monotonic() + 10
        while _processes_mentioning(str(data_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_mentioning(str(data_dir)) == []
    with start_up(data_dir, key=first.key) as second:
        listing = {
            info.id: info.state for info in Sandbox.list(api_url=second.url, api_key=first.key)
        }
        assert listing[sandbox.id] == "stopped"
        again = Sandbox.connect(sandbox.id, api_url=second.url, api_key=first.key)
        with pytest.raises(SandboxStateError):
            again.exec("true")
        again.close()
        assert not list((data_dir / "run").iterdir())
        assert second.stop() == 0
    assert _processes_mentioning(str(data_dir)) == []


def test_a_hibernated_sandbox_resumes_after_up_restarts(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Hibernate, stop `up` (SIGTERM), start it again on the same data dir: the sandbox is still
    hibernated, and resumes with its file and its background process."""
    data_dir = tmp_path_factory.mktemp("isorun-hibernated")
    heartbeat = "nohup sh -c 'while :; do echo b >> /tmp/beats; sleep 0.2; done' >/dev/null 2>&1 &"
    with start_up(data_dir) as first:
        sandbox = Sandbox("python", memory_mib=256, api_url=first.url, api_key=first.key)
        sandbox.exec(f"echo kept > /tmp/note; {heartbeat}", check=True)
        assert sandbox.hibernate().state == "hibernated"
        sandbox.close()
        assert first.stop() == 0
    with start_up(data_dir, key=first.key) as second:
        again = Sandbox.connect(sandbox.id, api_url=second.url, api_key=first.key)
        assert again.info.state == "hibernated"
        resumed = second.cli("resume", sandbox.id, key=first.key)
        assert resumed.stdout.split() == [sandbox.id, "running"], resumed.stderr
        assert again.exec("cat /tmp/note").stdout == "kept\n"
        before = int(again.exec("wc -l < /tmp/beats").stdout)
        time.sleep(1.2)
        assert int(again.exec("wc -l < /tmp/beats").stdout) > before
        again.destroy()
        assert second.stop() == 0
    assert _processes_mentioning(str(data_dir)) == []
