"""hostd's network side as one object: the host table, the proxies, the slots and who is in them.

```
start():  DNS proxy and egress gateway listening (free ports, every address; the host table
          lets only slots and loopback reach them) ─► host sysctls + table ─► sweep dead claims
open_slot():  namespace with the locked-down sets (every VM, pool entries included)
bind(slot, sandbox, spec):  the sandbox's sets (if not locked down) ─► its peer is known to the
          proxies by the slot's transit address      set_policy(): new sets, same slot
unbind(slot):  the proxies forget it (the VM's destroy closes the slot)
```
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import dns.asyncresolver
import dns.exception

from isorun_hostd.config import Settings
from isorun_hostd.net import nft
from isorun_hostd.net.apply import (
    NetworkError,
    Slot,
    ensure_host_table,
    remove_proxy_ports,
    run,
    sweep_dead_claims,
)
from isorun_hostd.net.peers import AuditSink, Peer
from isorun_hostd.net.plan import TRANSIT_NETWORK
from isorun_hostd.net.policy import CompiledPolicy, PolicyError, load_profiles
from isorun_hostd.net.spec import EgressPolicy, NetworkSpec
from isorun_hostd.proxy.ca import CertificateAuthority
from isorun_hostd.proxy.dns import DnsProxy, Upstream
from isorun_hostd.proxy.server import EgressGateway, Resolver

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Binding:
    slot: Slot
    sandbox_id: str
    spec: NetworkSpec
    policy: CompiledPolicy


def slot_sets(policy: CompiledPolicy) -> nft.SlotSets:
    return nft.SlotSets(
        allow=policy.allowed_cidrs,
        closed=policy.closed_cidrs,
        deny=policy.denied_cidrs,
        everything=policy.default_allow,
    )


class HostNetwork:
    """Slots for VMs and the policy of the sandboxes in them; the proxies' ``PeerLookup``."""

    def __init__(self, settings: Settings, audit: AuditSink) -> None:
        self.settings = settings
        self.audit = audit
        self.profiles = load_profiles(settings.egress_profiles_path)
        self.upstream = Upstream.from_settings(settings)
        self.ca = CertificateAuthority.load_or_create(settings.state_dir / "proxy-ca")
        # Read once: every create and restore of a guest adds them to its trust store.
        self.guest_cas = tuple(path.read_bytes() for path in settings.guest_ca_files)
        upstream_ssl = ssl.create_default_context()
        for path in settings.upstream_ca_files:
            upstream_ssl.load_verify_locations(cafile=path)
        self.dns = DnsProxy(self.peer, self.upstream, host="0.0.0.0", port=0, audit=audit)
        self.gateway = EgressGateway(
            self.peer,
            self.ca,
            host="0.0.0.0",
            audit=audit,
            resolver=upstream_resolver(self.upstream),
            upstream_ssl=upstream_ssl,
        )
        self.ports = nft.ProxyPorts(0, 0, 0)
        self._never_open: tuple[IPv4Network, ...] = (TRANSIT_NETWORK,)
        self._bindings: dict[str, Binding] = {}  # by the slot's transit address
        self._started = False
        self._locked_down = nft.SlotSets()

    async def start(self) -> None:
        """Raises NetworkError (nft or ip refused) or OSError (a proxy could not listen)."""
        await self.dns.start()
        await self.gateway.start()
        self.ports = nft.ProxyPorts(self.dns.port, self.gateway.http_port, self.gateway.tls_port)
        await ensure_host_table(self.ports)
        self._started = True
        self._never_open = (TRANSIT_NETWORK, *await _host_addresses())
        self._locked_down = slot_sets(self.compile(EgressPolicy()))
        for index in await sweep_dead_claims():
            log.info("network: removed slot %d left by a process that is gone", index)

    async def aclose(self) -> None:
        if self._started:
            self._started = False
            await remove_proxy_ports(self.ports)
        await self.gateway.aclose()
        await self.dns.aclose()

    def compile(self, policy: EgressPolicy) -> CompiledPolicy:
        """Check ``policy`` before anything is built for it. Raises PolicyError."""
        return CompiledPolicy.from_policy(policy, self.profiles, never_open=self._never_open)

    async def open_slot(self) -> Slot:
        return await Slot.open(self.ports, self._locked_down)

    async def bind(self, slot: Slot, sandbox_id: str, spec: NetworkSpec) -> None:
        """Give ``slot`` the policy of ``spec`` and tell the proxies whose it is.

        Raises:
            PolicyError: the policy does not compile.
            NetworkError: nft refused the sets.
        """
        policy = self.compile(spec.policy)
        sets = slot_sets(policy)
        if sets != self._locked_down:
            await slot.set_policy(sets)
        self._bindings[str(slot.plan.ns_ip)] = Binding(slot, sandbox_id, spec, policy)

    async def set_policy(self, slot: Slot, policy: EgressPolicy) -> NetworkSpec:
        """Change a bound slot's policy in place; the sandbox's new network spec."""
        key = str(slot.plan.ns_ip)
        binding = self._bindings[key]
        compiled = self.compile(policy)
        await slot.set_policy(slot_sets(compiled))
        spec = binding.spec.model_copy(update={"policy": policy})
        self._bindings[key] = Binding(slot, binding.sandbox_id, spec, compiled)
        self.audit(binding.sandbox_id, "policy.change", {"policy": policy.model_dump(mode="json")})
        return spec

    def unbind(self, slot: Slot) -> None:
        self._bindings.pop(str(slot.plan.ns_ip), None)

    def peer(self, source: str) -> Peer | None:
        """The ``PeerLookup`` of the proxies: the sandbox behind a transit address."""
        binding = self._bindings.get(source)
        if binding is None or binding.slot.closed:
            return None

        async def admit(addresses: Sequence[str], ttl_s: int) -> None:
            opened = [IPv4Address(a) for a in addresses if binding.policy.admits(a)]
            await binding.slot.admit(opened, ttl_s)

        return Peer(binding.sandbox_id, binding.policy, binding.spec.secrets, admit)


def upstream_resolver(upstream: Upstream) -> Resolver:
    """The gateway's host-side name resolution, through the same resolver as the DNS proxy,
    so both see the same names (IPv4 only: the sandboxes have no IPv6)."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [upstream.host]
    resolver.port = upstream.port

    async def resolve(host: str, port: int) -> list[tuple[str, int]]:
        try:
            answer = await resolver.resolve(host, "A")
        except dns.exception.DNSException as exc:
            raise OSError(f"{host} does not resolve: {exc}") from exc
        return [(record.to_text(), port) for record in answer]

    return resolve


async def _host_addresses() -> list[IPv4Network]:
    """The host's own IPv4 addresses, which no policy may open."""
    with contextlib.suppress(NetworkError, ValueError):
        out = await run(["ip", "-j", "-4", "addr", "show"])
        return [
            IPv4Network(f"{info['local']}/32")
            for link in json.loads(out)
            for info in link.get("addr_info", [])
            if "local" in info
        ]
    return []


__all__ = ["HostNetwork", "PolicyError", "slot_sets"]
