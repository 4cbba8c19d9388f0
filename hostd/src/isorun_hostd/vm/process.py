"""Starting and stopping the QEMU process of one VM.

QEMU is started with ``PR_SET_PDEATHSIG=SIGKILL`` so that it dies with hostd even when hostd
itself is killed, and in its own session so a terminal's Ctrl-C reaches hostd, which then tears
VMs down in order. The death signal is set by ``setpriv`` in front of QEMU's argv, not by a
``preexec_fn``: without one, Python starts the child with vfork, which does not copy hostd's
page tables (a fork of the API process blocks its event loop for milliseconds). Its stderr
goes to ``qemu.log`` in the run folder, which error messages quote; its stdout carries the
guest console (see ``console``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
from pathlib import Path

_PR_SET_PDEATHSIG = 1
KILL_WAIT_S = 5.0


def die_with_parent() -> None:
    """``preexec_fn`` for children that must not outlive this process (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# setpriv execs the rest of the argv with the signal set; it survives that exec and nsenter's.
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL", "--")


async def launch(argv: list[str], log_path: Path) -> asyncio.subprocess.Process:
    """Start QEMU with its stdout piped. Raises OSError if the binary cannot be executed."""
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *DIE_WITH_PARENT,
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )


async def kill(process: asyncio.subprocess.Process) -> None:
    """SIGKILL QEMU and reap it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
    await asyncio.wait_for(process.wait(), KILL_WAIT_S)


def tail(path: Path, lines: int = 15, max_bytes: int = 64 << 10) -> str:
    """The last lines of a log file, for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - max_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
