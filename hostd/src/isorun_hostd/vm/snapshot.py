"""A VM's whole state (guest RAM and device state) saved to, and loaded from, one stream file.

```
save:  stop ─► migrate fd:<file> ─► completed ─► fsync (if durable)   the caller conts or quits
load:  QEMU -S -incoming defer ─► migrate-incoming fd:<file> ─► paused    the caller conts
```
The file travels as a descriptor (QMP ``getfd`` over SCM_RIGHTS): hostd opens it with its own
flags and QEMU never sees a path or a command string. The guest's writable layer is a tmpfs in
its RAM, so the stream holds the sandbox's files too; the image disk is read-only and shared.

QEMU 7.2 exits when an incoming migration fails (a corrupt or foreign file), so a load watches
the process as well as the run state.

With ``ignore_shared`` (QEMU's x-ignore-shared) RAM mapped shared from a file is left out of the
stream: a template's save is then only its device state (~60 KiB), and its clones map the
template's RAM file privately before loading it. Both sides must agree on the capability (it
changes the stream's RAM header), so every save and load sets it explicitly: a clone saved for a
fork or a hibernation writes a full stream, its private RAM included.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from qemu.qmp import QMPError

from isorun_hostd.vm.qmp import QMP

# The default cap of 128 MiB/s holds even for a file: a 70 MiB save takes ~500 ms instead of
# ~60 ms (vm-lab.md).
MAX_BANDWIDTH_BYTES_S = 64 << 30
POLL_S = 0.002
SAVE_FD = "isorun-save"
LOAD_FD = "isorun-load"


class MigrationFailed(Exception):
    """QEMU reported the migration failed, or exited; the message is QEMU's."""


async def save(
    qmp: QMP,
    path: Path,
    *,
    timeout_s: float,
    ignore_shared: bool = False,
    durable: bool = True,
) -> int:
    """Stop the VM and write its state to ``path``, which must not exist; return its size.
    With ``ignore_shared``, RAM mapped shared from a file is left out (a template's save).
    Without ``durable`` the file is not fsynced: a stream read back at once and deleted (a
    fork's) needs only the page cache.

    The VM is left paused. On failure the partial file is removed.

    Raises:
        MigrationFailed: QEMU could not write the state (disk full, I/O error, timeout).
        FileExistsError: ``path`` exists.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            await qmp.pass_fd(fd, SAVE_FD)
        finally:
            os.close(fd)
        await qmp.execute("stop")
        await _set_ignore_shared(qmp, ignore_shared)
        await qmp.execute("migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH_BYTES_S})
        await qmp.execute("migrate", {"uri": f"fd:{SAVE_FD}"})
        await _wait_completed(qmp, timeout_s)
        if durable:
            await asyncio.to_thread(_fsync, path)
        return path.stat().st_size
    except BaseException:
        path.unlink(missing_ok=True)
        raise


async def load(
    qmp: QMP,
    process: asyncio.subprocess.Process,
    path: Path,
    *,
    timeout_s: float,
    ignore_shared: bool = False,
) -> None:
    """Load ``path`` into a QEMU started with ``-S -incoming defer``; it is left paused.
    ``ignore_shared`` must match the save's (a template's device state: True).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        MigrationFailed: QEMU refused the file (corrupt, truncated, from another VM shape) and
            exited, or did not finish in time.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        await qmp.pass_fd(fd, LOAD_FD)
    finally:
        os.close(fd)
    deadline = time.monotonic() + timeout_s
    try:
        await _set_ignore_shared(qmp, ignore_shared)
        await qmp.execute("migrate-incoming", {"uri": f"fd:{LOAD_FD}"})
        while True:
            if process.returncode is not None:
                raise MigrationFailed(f"QEMU exited with status {process.returncode} while loading")
            status = (await qmp.execute("query-status"))["status"]
            if status == "paused":
                return
            if time.monotonic() > deadline:
                raise MigrationFailed(f"loading did not finish within {timeout_s:g} s")
            await asyncio.sleep(POLL_S)
    except (QMPError, EOFError, OSError) as exc:
        raise MigrationFailed(f"QEMU stopped answering while loading ({exc})") from exc


async def _set_ignore_shared(qmp: QMP, state: bool) -> None:
    await qmp.execute(
        "migrate-set-capabilities",
        {"capabilities": [{"capability": "x-ignore-shared", "state": state}]},
    )


async def _wait_completed(qmp: QMP, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        info: dict[str, Any] = await qmp.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise MigrationFailed(str(info.get("error-desc") or status))
        if time.monotonic() > deadline:
            await qmp.execute("migrate_cancel")
            raise MigrationFailed(f"saving did not finish within {timeout_s:g} s")
        await asyncio.sleep(POLL_S)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
