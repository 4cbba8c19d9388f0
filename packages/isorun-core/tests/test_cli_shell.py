"""`isorun shell` as a user runs it, against the real API (`isorun up`, real VMs): stdin piped
(the script goes in, the shell's status comes out), and on a pseudo-terminal (raw keys, window
size followed, Ctrl-] detaches and says how to come back)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest
from isorun import Sandbox

from tests.framework.isorun_up import CLI, COMMAND_TIMEOUT_S, Up

pytestmark = pytest.mark.vm

WAIT_S = 30.0


@pytest.fixture(scope="module")
def sb(up: Up) -> Iterator[Sandbox]:
    with Sandbox("python", memory_mib=512, api_url=up.url, api_key=up.key) as sandbox:
        yield sandbox


def shell(up: Up, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`isorun shell ARGS` with `stdin` piped in."""
    return subprocess.run(
        [*CLI, "shell", *args],
        input=stdin,
        env=up.env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def test_a_piped_script_runs_and_its_exit_status_comes_back(up: Up, sb: Sandbox) -> None:
    done = shell(up, sb.id, stdin="echo from-pipe-$((40+2))\nexit 5\n")
    assert done.returncode == 5, done.stderr
    assert "from-pipe-42" in done.stdout
    # The end of stdin is not the shell's: a command that ends by itself ends the CLI.
    ended = shell(up, sb.id, "--command", "echo eof-$((1+1))")
    assert (ended.returncode, "eof-2" in ended.stdout) == (0, True), ended.stderr


def test_a_command_instead_of_a_login_shell(up: Up, sb: Sandbox) -> None:
    assert shell(up, sb.id, "--command", "exit 3").returncode == 3
    killed = shell(up, sb.id, "--command", "kill -TERM $$")
    assert killed.returncode == 128 + signal.SIGTERM, killed.stderr


def test_list_and_close(up: Up, sb: Sandbox) -> None:
    opened = sb.shells.create(["sleep", "1000"])
    listing = shell(up, sb.id, "--list")
    assert listing.returncode == 0, listing.stderr
    [line] = [line for line in listing.stdout.splitlines() if line.startswith(opened.id)]
    assert "running" in line and "sleep 1000" in line
    assert shell(up, sb.id, "--close", opened.id).returncode == 0
    assert opened.id not in {s.id for s in sb.shells.list() if s.running}
    missing = shell(up, sb.id, "--close", opened.id)
    assert missing.returncode == 125 and "not_found" in missing.stderr


class Pty:
    """The CLI on a pseudo-terminal: what it prints, and keys typed into it."""

    def __init__(self, up: Up, *args: str, cols: int, rows: int) -> None:
        self.master, slave = pty.openpty()
        self.resize(cols, rows)
        self.process = subprocess.Popen(
            [*CLI, "shell", *args], stdin=slave, stdout=slave, stderr=slave, env=up.env()
        )
        os.close(slave)
        self.seen = b""

    def resize(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def expect(self, pattern: bytes) -> bytes:
        """What the CLI printed up to `pattern` (a regex), consumed."""
        deadline = time.monotonic() + WAIT_S
        while (match := re.search(pattern, self.seen)) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.seen[-2000:]!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the CLI exited: its end of the terminal is closed
                    assert re.search(pattern, self.seen), self.seen[-2000:]
        printed, self.seen = self.seen[: match.end()], self.seen[match.end() :]
        return printed

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT_S)
        os.close(self.master)


def test_on_a_terminal_keys_go_through_the_window_follows_and_ctrl_bracket_detaches(
    up: Up, sb: Sandbox
) -> None:
    term = Pty(up, sb.id, cols=100, rows=30)
    try:
        term.expect(rb"[#$] $")
        term.type(b"stty size\r")
        term.expect(rb"30 100")
        term.resize(120, 40)
        term.process.send_signal(signal.SIGWINCH)  # the kernel's, on a controlling terminal
        time.sleep(0.5)
        term.type(b"stty size\r")
        term.expect(rb"40 120")
        term.type(b"sleep 1000\r")
        time.sleep(0.5)
        term.type(b"\x03echo tty-$((6*7))\r")  # raw: Ctrl-C reaches the shell, not the CLI
        term.expect(rb"tty-42")
        term.type(b"\x1d")
        printed = term.expect(rb"--attach (sh-[0-9a-f]{12})")
        assert term.process.wait(WAIT_S) == 0
    finally:
        term.close()
    assert f"detached; reattach with: isorun shell {sb.id} --attach".encode() in printed
    shell_id = re.findall(rb"--attach (sh-[0-9a-f]{12})", printed)[-1].decode()
    [running] = [s for s in sb.shells.list() if s.id == shell_id]
    assert running.running and (running.cols, running.rows) == (120, 40)

    back = shell(up, sb.id, "--attach", shell_id, stdin="exit 4\n")
    assert back.returncode == 4, back.stderr
    assert "tty-42" in back.stdout  # the scrollback, replayed
