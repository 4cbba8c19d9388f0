"""What a VM can leave on the host, for tests to assert that nothing was left."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from isorun_hostd.net.plan import NETNS_DIR, SLOT_DIR, SlotPlan

SYS_NET = Path("/sys/class/net")


def network_slots() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """Slot namespaces and host veths (every hostd's), and the slots this process claims: what
    a sandbox's network leaves if its teardown fails. Other processes' slots come and go (tests
    run beside other hostds), so a namespace or veth counts as leaked only when no live claim
    of another process covers it."""
    claims: set[int] = set()
    foreign: set[int] = set()
    for claim in SLOT_DIR.iterdir() if SLOT_DIR.is_dir() else ():
        if not claim.name.isdigit():
            continue
        try:
            pid = int(claim.read_text() or "0")
        except (OSError, ValueError):
            continue
        (claims if pid == os.getpid() else foreign).add(int(claim.name))
    netns = {
        p.name
        for p in (NETNS_DIR.iterdir() if NETNS_DIR.is_dir() else ())
        if p.name.startswith("isorun-") and not _slot_in(p.name, "isorun-", foreign)
    }
    veths = {
        p.name
        for p in SYS_NET.iterdir()
        if p.name.startswith("isr-") and not _slot_in(p.name, "isr-", foreign)
    }
    return frozenset(netns), frozenset(veths), frozenset(SlotPlan(i).netns for i in claims)


def slot_names(indices: set[int]) -> set[str]:
    """The namespace, veth and claim names of these slots (claims are listed by namespace)."""
    return {name for i in indices for name in (SlotPlan(i).netns, SlotPlan(i).host_veth)}


def _slot_in(name: str, prefix: str, indices: set[int]) -> bool:
    number = name.removeprefix(prefix)
    return number.isdigit() and int(number) in indices


def qemu_folders(pids: set[int], run_dir: Path) -> dict[int, str]:
    """For each QEMU pid, the name of the run folder under ``run_dir`` its command line names."""
    prefix = f"{run_dir}/".encode()
    folders = {}
    for pid in pids:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in args:
            start = arg.find(prefix)
            if start >= 0:
                folders[pid] = arg[start + len(prefix) :].split(b"/")[0].decode()
                break
    return folders


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
    template_files: frozenset[str]
    namespaces: frozenset[str]
    veths: frozenset[str]
    slot_claims: frozenset[str]

    @classmethod
    def take(
        cls, run_dir: Path, images_dir: Path, template_dir: Path, templates_prefix: str
    ) -> HostSnapshot:
        """``template_dir``'s folders beginning with ``templates_prefix`` are those of runtimes
        on ``run_dir`` (and their state folder); their files are listed as ``folder/path``."""
        run = frozenset(os.listdir(run_dir)) if run_dir.exists() else frozenset()
        images = (
            frozenset(str(p.relative_to(images_dir)) for p in images_dir.rglob("*"))
            if images_dir.exists()
            else frozenset()
        )
        templates = frozenset(
            str(p.relative_to(template_dir))
            for folder in template_dir.glob(f"{templates_prefix}-*")
            for p in [folder, *folder.rglob("*")]
        )
        return cls(frozenset(qemu_pids(run_dir)), run, images, templates, *network_slots())

    def added_since(self, before: HostSnapshot) -> dict[str, set[str] | set[int]]:
        """What exists now that did not before, by kind; empty when nothing leaked."""
        added: dict[str, set[str] | set[int]] = {
            "qemu processes": set(self.qemu - before.qemu),
            "run folder entries": set(self.run_entries - before.run_entries),
            "image cache files": set(self.image_files - before.image_files),
            "template files": set(self.template_files - before.template_files),
            "network namespaces": set(self.namespaces - before.namespaces),
            "host veths": set(self.veths - before.veths),
            "network slot claims": set(self.slot_claims - before.slot_claims),
        }
        return {kind: items for kind, items in added.items() if items}
