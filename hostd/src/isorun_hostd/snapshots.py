"""Saved sandbox states on disk: one folder per snapshot, holding QEMU's state stream and what
is needed to start a VM of the same shape around it.

```
<root>/<id>/state        guest RAM (its writable layer included) and device state
<root>/<id>/meta.json    SnapshotMeta: VM shape, image, boot files; written last
```
A folder without ``meta.json`` is a save that never finished; ``SnapshotStore.sweep`` removes
it, and the ``.gone-*`` folders that ``discard`` left behind. Named snapshots and hibernated
sandboxes each have a store; fork streams are transient.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from isorun_hostd.images import ImageDisk

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Folders that ``discard`` took out of the store; no id starts with a dot.
GONE_PREFIX = ".gone-"


class SnapshotNotFound(LookupError):
    """No snapshot {snapshot_id} on this node."""


class SnapshotMeta(BaseModel):
    """What a restore needs besides the state stream: the VM's shape must match the saved one."""

    model_config = ConfigDict(frozen=True)

    snapshot_id: str
    kind: Literal["snapshot", "hibernation"]
    source_sandbox_id: str
    created_unix: float
    vcpus: int
    mem_mib: int
    # The kernel command line's hostname: part of the saved VM's argv, so a restore repeats it;
    # the guest's actual hostname is set afterwards through the agent.
    boot_hostname: str
    hostname: str
    image: ImageDisk
    kernel: Path
    initramfs: Path
    accel: str
    size_bytes: int


class SnapshotStore:
    """Snapshot folders under ``root``, named by id."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, snapshot_id: str) -> Path:
        if not _ID.match(snapshot_id):
            raise SnapshotNotFound(f"no snapshot {snapshot_id!r}: not a valid snapshot id")
        return self.root / snapshot_id

    def state_path(self, snapshot_id: str) -> Path:
        return self.folder(snapshot_id) / "state"

    def prepare(self, snapshot_id: str) -> Path:
        """A new, empty folder for ``snapshot_id``; return the path its state goes to."""
        folder = self.folder(snapshot_id)
        folder.mkdir(parents=True, exist_ok=False)
        return folder / "state"

    def commit(self, meta: SnapshotMeta) -> None:
        """Write ``meta.json`` atomically: from then on the snapshot exists."""
        folder = self.folder(meta.snapshot_id)
        partial = folder / "meta.json.partial"
        partial.write_text(meta.model_dump_json())
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        partial.rename(folder / "meta.json")

    def get(self, snapshot_id: str) -> SnapshotMeta:
        """Raises SnapshotNotFound when the snapshot is absent or unreadable."""
        path = self.folder(snapshot_id) / "meta.json"
        try:
            return SnapshotMeta.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise SnapshotNotFound(f"no snapshot {snapshot_id} on this node") from None
        except (OSError, ValidationError) as exc:
            raise SnapshotNotFound(f"snapshot {snapshot_id} is unreadable: {exc}") from exc

    def all(self) -> list[SnapshotMeta]:
        found: list[SnapshotMeta] = []
        for folder in sorted(self.root.iterdir()) if self.root.is_dir() else ():
            try:
                found.append(self.get(folder.name))
            except SnapshotNotFound:
                continue
        return found

    def delete(self, snapshot_id: str) -> None:
        """Remove the snapshot; absent is fine."""
        shutil.rmtree(self.folder(snapshot_id), ignore_errors=True)

    def discard(self, snapshot_id: str) -> Path | None:
        """Take the snapshot out of the store at once, by renaming its folder to a name no id
        can have; return that folder for the caller to remove off the critical path (removing
        a state file of a few hundred MiB takes ~20 ms), or None if it was absent. The id is
        free again at once."""
        gone = self.root / f"{GONE_PREFIX}{snapshot_id}-{secrets.token_hex(4)}"
        try:
            self.folder(snapshot_id).rename(gone)
        except FileNotFoundError:
            return None
        return gone

    def sweep(self, older_than_s: float = 60.0) -> list[str]:
        """Remove folders of saves that never finished (no meta.json) and discarded ones that
        a process died before removing; return their names."""
        removed: list[str] = []
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            discarded = folder.name.startswith(GONE_PREFIX)
            if (folder / "meta.json").exists() and not discarded:
                continue
            if not discarded and time.time() - folder.stat().st_mtime < older_than_s:
                continue  # a save in progress
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
        return removed
