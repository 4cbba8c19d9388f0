"""What a VM can leave on the host, for tests to assert that nothing was left."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def qemu_pids(run_dir: Path) -> set[int]:
    """PIDs of QEMU processes whose command line mentions ``run_dir``."""
    marker = str(run_dir).encode()
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and marker in cmdline:
            pids.add(int(proc.name))
    return pids


@dataclass(frozen=True)
class HostSnapshot:
    qemu: frozenset[int]
    run_entries: frozenset[str]
    image_files: frozenset[str]

    @classmethod
    def take(cls, run_dir: Path, images_dir: Path) -> HostSnapshot:
        run = frozenset(os.listdir(run_dir)) if run_dir.exists() else frozenset()
        images = (
            frozenset(str(p.relative_to(images_dir)) for p in images_dir.rglob("*"))
            if images_dir.exists()
            else frozenset()
        )
        return cls(frozenset(qemu_pids(run_dir)), run, images)

    def added_since(self, before: HostSnapshot) -> dict[str, set[str] | set[int]]:
        """What exists now that did not before, by kind; empty when nothing leaked."""
        added: dict[str, set[str] | set[int]] = {
            "qemu processes": set(self.qemu - before.qemu),
            "run folder entries": set(self.run_entries - before.run_entries),
            "image cache files": set(self.image_files - before.image_files),
        }
        return {kind: items for kind, items in added.items() if items}
