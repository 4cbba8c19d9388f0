"""Making the plan real: namespaces, veth pairs, taps and rulesets, through ``ip`` and ``nft``.

Every command is an argv (never a shell line) built from hostd's own values: slot numbers,
fixed names, addresses rendered from ``ipaddress`` objects. Nothing the guest sends reaches
one, except addresses the DNS proxy resolved, which arrive here as ``IPv4Address`` objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from isorun_hostd.net import nft
from isorun_hostd.net.plan import (
    NS_VETH,
    SLOT_DIR,
    TAP,
    TAP_MAC,
    TRANSIT_NETWORK,
    SlotPlan,
    claim_slot,
    dead_claims,
    release_slot,
)
from isorun_hostd.net.spec import GUEST_PREFIX, HOST_ADDRESS

SLOT = nft.SLOT_TABLE
log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 10.0
HOST_SYSCTLS = {
    # Slots reach the world (when their policy allows) through the host's routing.
    "net/ipv4/ip_forward": "1",
    # Drops are logged inside the slots' namespaces; the kernel drops those lines otherwise.
    "net/netfilter/nf_log_all_netns": "1",
}


class NetworkError(RuntimeError):
    """Setting up or changing a sandbox's network failed; the message quotes the tool."""


async def run(argv: list[str], stdin: str | None = None) -> str:
    """Run ``argv``; its stdout. Raises NetworkError naming the command and its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), COMMAND_TIMEOUT_S
        )
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise NetworkError(f"{argv[0]} did not finish in {COMMAND_TIMEOUT_S} s: {argv}") from None
    if proc.returncode != 0:
        raise NetworkError(
            f"{' '.join(argv)} failed ({proc.returncode}): {err.decode(errors='replace').strip()}"
        )
    return out.decode()


# Indexes of slots this process has claimed and is still building (Slot.open has not returned):
# their namespace and veth exist before any VM holds them.
_opening: set[int] = set()


def slots_opening() -> frozenset[int]:
    """The indexes of slots being built in this process right now."""
    return frozenset(_opening)


@dataclass
class Slot:
    """One VM's namespace: created by ``open``, gone after ``close``."""

    plan: SlotPlan
    ports: nft.ProxyPorts
    closed: bool = field(default=False, init=False)

    @classmethod
    async def open(cls, ports: nft.ProxyPorts, sets: nft.SlotSets) -> Slot:
        """Claim a slot and build its namespace with ``sets`` in force from the first packet.

        Raises:
            NoFreeSlot: every slot is taken.
            NetworkError: ``ip`` or ``nft`` refused; nothing is left behind.
        """
        plan, stale = claim_slot()
        slot = cls(plan, ports)
        _opening.add(plan.index)
        try:
            if stale:
                await _remove(plan)
            await slot._build(sets)
        except BaseException:
            await slot.close()
            raise
        finally:
            _opening.discard(plan.index)
        return slot

    @property
    def nsenter(self) -> list[str]:
        """The argv prefix that runs a command inside this slot's namespace."""
        return ["nsenter", f"--net={self.plan.netns_path}", "--"]

    async def _build(self, sets: nft.SlotSets) -> None:
        plan = self.plan
        await run(["ip", "netns", "add", plan.netns])
        await run(
            ["ip", "-batch", "-"],
            f"link add {plan.host_veth} type veth peer name {NS_VETH} netns {plan.netns}\n"
            f"addr add {plan.host_ip}/30 dev {plan.host_veth}\n"
            f"link set {plan.host_veth} up\n",
        )
        await run(
            ["ip", "-n", plan.netns, "-batch", "-"],
            "link set lo up\n"
            f"tuntap add dev {TAP} mode tap\n"
            f"link set {TAP} address {TAP_MAC}\n"
            f"addr add {HOST_ADDRESS}/{GUEST_PREFIX} dev {TAP}\n"
            f"link set {TAP} up\n"
            f"addr add {plan.ns_ip}/30 dev {NS_VETH}\n"
            f"link set {NS_VETH} up\n"
            f"route add default via {plan.host_ip}\n",
        )
        await run([*self.nsenter, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        await run([*self.nsenter, "nft", "-f", "-"], nft.slot_ruleset(plan, self.ports, sets))

    async def set_policy(self, sets: nft.SlotSets) -> None:
        """Replace the policy in one transaction; addresses the DNS proxy admitted under the
        old policy are dropped too (the guest resolves again)."""
        await run([*self.nsenter, "nft", "-f", "-"], nft.set_elements(sets, flush_admitted=True))

    async def admit(self, addresses: Iterable[IPv4Address], ttl_s: int) -> None:
        script = nft.admit(addresses, ttl_s)
        if script:
            await run([*self.nsenter, "nft", "-f", "-"], script)

    async def drops(self) -> dict[str, int]:
        """Packets refused so far, by counter (``dropped``, ``spoofed``)."""
        out = await run([*self.nsenter, "nft", "-j", "list", "counters", "table", "inet", SLOT])
        counts: dict[str, int] = {}
        for item in json.loads(out).get("nftables", []):
            counter = item.get("counter")
            if counter:
                counts[str(counter["name"])] = int(counter["packets"])
        return counts

    async def close(self) -> None:
        """Remove the namespace, the veth pair and the tap, then free the slot. Idempotent;
        call it after the VM's QEMU is reaped (its tap holds the namespace otherwise)."""
        if self.closed:
            return
        self.closed = True
        try:
            await _remove(self.plan)
        finally:
            release_slot(self.plan)


async def _remove(plan: SlotPlan) -> None:
    # Deleting the host end removes both ends at once; a namespace deleted with a veth still in
    # it would free it later, in the kernel's own time, which a leak check would catch.
    with contextlib.suppress(NetworkError):
        await run(["ip", "link", "del", plan.host_veth])
    if plan.netns_path.exists():
        await run(["ip", "netns", "del", plan.netns])


async def ensure_host_table(ports: nft.ProxyPorts) -> None:
    """Forwarding on, the shared host table (made by the first hostd on this host, under a
    lock so that two starting at once do not both make it) and ``ports`` let in."""
    for key, value in HOST_SYSCTLS.items():
        Path("/proc/sys", key).write_text(value)
    SLOT_DIR.mkdir(parents=True, exist_ok=True)
    with (SLOT_DIR.parent / "host.lock").open("w") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            await run(["nft", "list", "table", "inet", nft.HOST_TABLE])
        except NetworkError:
            await run(["nft", "-f", "-"], nft.host_ruleset())
    await run(["nft", "-f", "-"], nft.proxy_port_elements("add", ports))
    log.info("network: slots in %s, proxies on %s", TRANSIT_NETWORK, ports)


async def remove_proxy_ports(ports: nft.ProxyPorts) -> None:
    """Stop letting slots reach ``ports``; the table stays for the other hostds."""
    with contextlib.suppress(NetworkError):
        await run(["nft", "-f", "-"], nft.proxy_port_elements("delete", ports))


async def sweep_dead_claims(slot_dir: Path = SLOT_DIR) -> list[int]:
    """Remove the namespaces and veths of slots whose claiming process is gone (a hostd that
    was killed); their numbers."""
    swept = []
    for plan in dead_claims(slot_dir):
        with contextlib.suppress(NetworkError):
            await _remove(plan)
            release_slot(plan, slot_dir)
            swept.append(plan.index)
    return swept
