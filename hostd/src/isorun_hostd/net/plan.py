"""The address plan: one network namespace ("slot") per VM, joined to the host by a veth pair.

```
guest 10.0.0.2 ─ eth0 ═ tap0 10.0.0.1 ─┐ netns isorun-<n>               host namespace
 (same MAC and addresses in every slot) │ table inet sandbox: DNAT :53   table inet isorun_host:
                                        │ and tcp :80/:443 to the host's proxy ports in, nothing
                                        │ proxies; policy; masquerade    else from a slot, no new
                                        │ to the slot's transit address  connections into one;
                   veth0 100.96.x.y+2/30 ═══ isr-<n> 100.96.x.y+1/30      masquerade out
```
Slot ``n`` owns the ``n``-th /30 of ``TRANSIT_NETWORK``: the host end is its first address, the
namespace end its second. The namespace NATs the guest to its end, so the source address of
anything reaching the host names the slot, and therefore the sandbox (see ``net.peers``).

Slots are claimed host-wide (several hostds may share a host, as tests do) by creating
``SLOT_DIR/<n>`` exclusively; the file holds the claiming process's pid, so a claim whose
process is gone can be taken over (after removing what that process left behind).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from isorun_hostd.net.spec import GUEST_ADDRESS, GUEST_PREFIX, HOST_ADDRESS

TRANSIT_NETWORK = IPv4Network("100.96.0.0/16")
SLOT_COUNT = TRANSIT_NETWORK.num_addresses // 4
SLOT_DIR = Path("/run/isorun-net/slots")
NETNS_DIR = Path("/run/netns")
TAP = "tap0"
NS_VETH = "veth0"
# The MACs are the same in every slot, so a restored or forked guest's ARP cache stays right.
TAP_MAC = "02:00:00:00:00:01"
GUEST_MAC = "02:00:00:00:00:02"
GUEST_IP_ARG = f"{GUEST_ADDRESS}/{GUEST_PREFIX}:{HOST_ADDRESS}"


class NoFreeSlot(RuntimeError):
    """Every transit /30 is claimed."""


@dataclass(frozen=True, slots=True)
class SlotPlan:
    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < SLOT_COUNT:
            raise ValueError(f"slot {self.index} is outside 0..{SLOT_COUNT - 1}")

    @property
    def netns(self) -> str:
        return f"isorun-{self.index}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def host_veth(self) -> str:
        return f"isr-{self.index}"  # at most 9 characters: within IFNAMSIZ

    @property
    def host_ip(self) -> IPv4Address:
        return TRANSIT_NETWORK.network_address + 4 * self.index + 1

    @property
    def ns_ip(self) -> IPv4Address:
        return self.host_ip + 1


def claim_slot(slot_dir: Path = SLOT_DIR) -> tuple[SlotPlan, bool]:
    """Claim a free slot; True with it when it was taken over from a dead process (its
    namespace and veth may still exist and must be removed before reuse).

    Raises:
        NoFreeSlot: all slots are claimed by live processes.
    """
    slot_dir.mkdir(parents=True, exist_ok=True)
    start = secrets.randbelow(SLOT_COUNT)
    for offset in range(SLOT_COUNT):
        index = (start + offset) % SLOT_COUNT
        path = slot_dir / str(index)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _claimed_by_live_process(path) or not _take_over(path):
                continue
            return SlotPlan(index), True
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return SlotPlan(index), False
    raise NoFreeSlot(
        f"all {SLOT_COUNT} network slots in {TRANSIT_NETWORK} are in use; destroy sandboxes"
    )


def release_slot(plan: SlotPlan, slot_dir: Path = SLOT_DIR) -> None:
    with contextlib.suppress(FileNotFoundError):
        (slot_dir / str(plan.index)).unlink()


def dead_claims(slot_dir: Path = SLOT_DIR) -> list[SlotPlan]:
    """Slots claimed by processes that are gone."""
    if not slot_dir.is_dir():
        return []
    return [
        SlotPlan(int(path.name))
        for path in slot_dir.iterdir()
        if path.name.isdigit()
        and int(path.name) < SLOT_COUNT
        and not _claimed_by_live_process(path)
    ]


def _claimed_by_live_process(path: Path) -> bool:
    try:
        pid = int(path.read_text() or "0")
    except (OSError, ValueError):
        return True  # being written right now, or unreadable: leave it alone
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def _take_over(path: Path) -> bool:
    """Rewrite a dead process's claim as ours; False if another process got there first."""
    stale = path.with_name(f"{path.name}.{os.getpid()}.stale")
    try:
        os.rename(path, stale)
    except FileNotFoundError:
        return False
    stale.unlink()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True
