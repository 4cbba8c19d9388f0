"""`sb.shells` (sync) against the real API (`isorun up`, real VMs): a shell outlives its client,
replays what it wrote meanwhile, takes Ctrl-C, resizes, reports its exit, and is listed, signalled
and closed. The async twin is test_sdk_async_shells.py; the CLI's is test_cli_shell.py."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator

import pytest
from isorun import (
    Client,
    NotFound,
    Sandbox,
    SandboxNotFound,
    ShellExit,
    ShellResized,
    Shells,
    Terminal,
    TerminalClosed,
    TerminalTimeout,
    UsageError,
)

from tests.framework.isorun_up import Up

pytestmark = pytest.mark.vm

WAIT_S = 30.0
PROMPT = re.compile(rb"[#$] $")


@pytest.fixture(scope="module")
def sb(up: Up) -> Iterator[Sandbox]:
    with Sandbox("python", memory_mib=512, api_url=up.url, api_key=up.key) as sandbox:
        yield sandbox


def drain(term: Terminal) -> list[bytes]:
    """The output until the shell's end."""
    return list(term)


def test_a_shell_outlives_its_client_and_replays_what_came_meanwhile(sb: Sandbox) -> None:
    shell = sb.shells.create(cols=100, rows=30)
    assert shell.id.startswith("sh-") and shell.running and (shell.cols, shell.rows) == (100, 30)
    with sb.shells.attach(shell.id, write=True) as term:
        assert term.writer and (term.pid, term.cols, term.rows) == (shell.pid, 100, 30)
        term.read_until(PROMPT, timeout=WAIT_S)
        term.send("for i in $(seq 1 10); do echo tick-$i; sleep 0.2; done; echo loop-$((6*7))\n")
        term.read_until("tick-2", timeout=WAIT_S)
    # Detached: the loop goes on, into the scrollback only.
    time.sleep(3)
    [listed] = [s for s in sb.shells.list() if s.id == shell.id]
    assert listed.running and listed.attached == 0
    with sb.shells.attach(shell.id, write=True) as term:
        replayed = term.read_until("loop-42", timeout=WAIT_S)
        assert b"tick-1\r\n" in replayed and b"tick-10\r\n" in replayed

        # The loop runs in its own sh, so Ctrl-C kills it for sure: bash's own loop loses a Ctrl-C
        # that lands while it forks the next command.
        term.send("sh -c 'while :; do echo spin; sleep 0.1; done'\n")
        term.read_until("spin", timeout=WAIT_S)
        term.send("\x03")
        term.send("echo stopped-$((6*7))\n")
        term.read_until("stopped-42", timeout=WAIT_S)

        term.send("exit 7\n")
        drain(term)
        assert term.exit is not None and (term.exit.exit_code, term.exit.signal) == (7, None)
        with pytest.raises(TerminalClosed):
            term.recv(timeout=1)
    [ended] = [s for s in sb.shells.list() if s.id == shell.id]
    assert (ended.running, ended.exit_code) == (False, 7)


def test_a_resize_reaches_the_terminal_and_every_client(sb: Sandbox) -> None:
    shell = sb.shells.create(["/bin/sh"], cols=80, rows=24)
    with (
        sb.shells.attach(shell.id, write=True) as writer,
        sb.shells.attach(shell.id) as reader,
    ):
        assert not reader.writer
        sb.shells.resize(shell.id, 120, 40)
        writer.send("stty size\n")
        writer.read_until("40 120", timeout=WAIT_S)
        assert (writer.cols, writer.rows) == (120, 40)
        writer.resize(90, 33)  # the control frame, this time
        event = reader.recv(timeout=WAIT_S)
        while not isinstance(event, ShellResized) or event.cols != 90:
            event = reader.recv(timeout=WAIT_S)
        assert (reader.cols, reader.rows) == (90, 33)
        writer.send("stty size\n")
        writer.read_until("33 90", timeout=WAIT_S)
        # The reader's input is dropped: the shell never sees this line.
        reader.send("echo from-the-$((1+1))-reader\n")
        writer.send("echo from-the-writer\n")
        seen = writer.read_until("from-the-writer\r\n", timeout=WAIT_S)
        assert b"from-the-2-reader" not in seen
    sb.shells.close(shell.id)


def test_signals_and_close_end_a_shell(sb: Sandbox) -> None:
    sleeper = sb.shells.create(["sleep", "1000"])
    with sb.shells.attach(sleeper.id) as term:
        sb.shells.signal(sleeper.id, signal.SIGTERM, target="shell")
        drain(term)
        assert isinstance(term.exit, ShellExit) and term.exit.signal == signal.SIGTERM
        assert term.exit.status == 128 + signal.SIGTERM

    hung_up = sb.shells.create()
    assert hung_up.id in {s.id for s in sb.shells.list()}
    sb.shells.close(hung_up.id)
    assert hung_up.id not in {s.id for s in sb.shells.list() if s.running}
    with pytest.raises(UsageError):
        sb.shells.signal(hung_up.id, signal.SIGINT, target="everyone")


def test_read_until_times_out_keeping_what_it_read(sb: Sandbox) -> None:
    shell = sb.shells.create(["/bin/sh", "-c", "echo ready-$((2*3)); exec sleep 1000"])
    with sb.shells.attach(shell.id, write=True) as term:
        with pytest.raises(TerminalTimeout) as timed_out:
            term.read_until("never printed", timeout=2)
        assert b"ready-6" in timed_out.value.output
        assert term.read_until("ready-6", timeout=1).endswith(b"ready-6")
        term.signal(signal.SIGKILL)
        drain(term)
        assert term.exit is not None and term.exit.signal == signal.SIGKILL


def test_unknown_shells_and_sandboxes_are_typed_errors(sb: Sandbox, up: Up) -> None:
    with pytest.raises(NotFound) as unknown:
        sb.shells.attach("sh-000000000000")
    assert not isinstance(unknown.value, SandboxNotFound)
    with pytest.raises(NotFound):
        sb.shells.resize("sh-000000000000", 80, 24)
    with Client(api_url=up.url, api_key=up.key) as client:
        with pytest.raises(SandboxNotFound):
            Shells(client, "sb-doesnotexist").attach("sh-000000000000")
        with pytest.raises(SandboxNotFound):
            Shells(client, "sb-doesnotexist").list()
