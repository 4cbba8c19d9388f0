"""The nftables rulesets, as text for ``nft -f``: pure functions, tested against golden files.

Per slot, inside its namespace, a fixed ruleset whose per-sandbox data lives in sets, so a
policy change or a DNS answer only rewrites set elements:
```
table inet sandbox
  prerouting (dstnat)   from tap0: 10.0.0.1:53 udp/tcp ─► DNS proxy; any tcp :80/:443 ─► gateway
  postrouting (srcnat)  out veth0: masquerade (the guest leaves as the slot's transit address)
  forward (policy drop) established ─► accept
                        not from tap0, not from 10.0.0.2, IPv6 ─► drop
                        to the proxies ─► accept
                        @allow (explicit CIDRs) ─► accept
                        @admitted (by the DNS proxy, with timeouts) ─► accept
                        @closed (link-local, private, ...) ─► drop      @deny ─► drop
                        @everything (0.0.0.0/0 when the profile opens all) ─► accept
                        anything else ─► drop
  input (policy drop)   the namespace itself serves nothing
  every drop: counter "dropped" (or "spoofed"), rate-limited log line "isorun drop <netns>: "
```
On the host, one table shared by every hostd on it (created if missing, never flushed):
```
table inet isorun_host
  input                 from isr-*: established or a port in @proxy_ports ─► accept; else drop
                        from elsewhere (but lo) to a port in @proxy_ports ─► drop
  forward               into isr-*: only established; isr-* to the transit range: drop
  postrouting (srcnat)  from the transit range out of any other interface: masquerade
```
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from isorun_hostd.net.plan import NS_VETH, TAP, TRANSIT_NETWORK, SlotPlan
from isorun_hostd.net.spec import GUEST_ADDRESS, HOST_ADDRESS

SLOT_TABLE = "sandbox"
HOST_TABLE = "isorun_host"
HOST_VETH_PATTERN = "isr-*"
LOG_RATE = "5/second burst 10 packets"


@dataclass(frozen=True, slots=True)
class ProxyPorts:
    """Where hostd's proxies listen, on every address of the host namespace."""

    dns: int
    http: int
    tls: int


@dataclass(frozen=True, slots=True)
class SlotSets:
    """A policy as set contents. ``allow`` beats everything after it (see the ruleset)."""

    allow: tuple[IPv4Network, ...] = ()
    closed: tuple[IPv4Network, ...] = ()
    deny: tuple[IPv4Network, ...] = ()
    everything: bool = False


def slot_ruleset(plan: SlotPlan, ports: ProxyPorts, sets: SlotSets) -> str:
    """The whole table for a new slot."""
    host = plan.host_ip
    tcp_udp = "meta l4proto { tcp, udp }"
    proxies = f"{{ {ports.dns}, {ports.http}, {ports.tls} }}"
    return f"""\
table inet {SLOT_TABLE} {{
\tset allow {{ type ipv4_addr; flags interval; auto-merge; }}
\tset admitted {{ type ipv4_addr; flags timeout; }}
\tset closed {{ type ipv4_addr; flags interval; auto-merge; }}
\tset deny {{ type ipv4_addr; flags interval; auto-merge; }}
\tset everything {{ type ipv4_addr; flags interval; }}
\tcounter dropped {{ }}
\tcounter spoofed {{ }}
\tchain prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tiifname "{TAP}" ip daddr {HOST_ADDRESS} {tcp_udp} th dport 53 dnat ip to {host}:{ports.dns}
\t\tiifname "{TAP}" tcp dport 80 dnat ip to {host}:{ports.http}
\t\tiifname "{TAP}" tcp dport 443 dnat ip to {host}:{ports.tls}
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\toifname "{NS_VETH}" masquerade
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy drop;
\t\tct state established,related accept
\t\tiifname != "{TAP}" goto refuse
\t\tip saddr != {GUEST_ADDRESS} counter name spoofed drop
\t\tmeta nfproto ipv6 goto refuse
\t\tip daddr {host} {tcp_udp} th dport {proxies} accept
\t\tip daddr @allow accept
\t\tip daddr @admitted accept
\t\tip daddr @closed goto refuse
\t\tip daddr @deny goto refuse
\t\tip daddr @everything accept
\t\tgoto refuse
\t}}
\tchain input {{
\t\ttype filter hook input priority filter; policy drop;
\t\tiifname "lo" accept
\t\tct state established,related accept
\t\tgoto refuse
\t}}
\tchain refuse {{
\t\tlimit rate {LOG_RATE} log prefix "isorun drop {plan.netns}: " level info
\t\tcounter name dropped drop
\t}}
}}
{set_elements(sets)}"""


def set_elements(sets: SlotSets, *, flush_admitted: bool = False) -> str:
    """Replace the policy sets' contents in one transaction (a policy change)."""
    lines = [f"flush set inet {SLOT_TABLE} {name}" for name in ("allow", "closed", "deny")]
    lines.append(f"flush set inet {SLOT_TABLE} everything")
    if flush_admitted:
        lines.append(f"flush set inet {SLOT_TABLE} admitted")
    lines += _add("allow", sets.allow)
    lines += _add("closed", sets.closed)
    lines += _add("deny", sets.deny)
    if sets.everything:
        lines += _add("everything", [IPv4Network("0.0.0.0/0")])
    return "\n".join(lines) + "\n"


def admit(addresses: Iterable[IPv4Address], ttl_s: int) -> str:
    """Open ``addresses`` for ``ttl_s`` seconds. ``add`` leaves an existing element's timeout
    alone, so each is added, deleted and added again: one transaction that always refreshes."""
    listed = ", ".join(str(a) for a in addresses)
    if not listed:
        return ""
    timed = ", ".join(f"{a} timeout {ttl_s}s" for a in addresses)
    return (
        f"add element inet {SLOT_TABLE} admitted {{ {listed} }}\n"
        f"delete element inet {SLOT_TABLE} admitted {{ {listed} }}\n"
        f"add element inet {SLOT_TABLE} admitted {{ {timed} }}\n"
    )


def host_ruleset() -> str:
    """The shared host table; applied only when it does not exist yet."""
    return f"""\
table inet {HOST_TABLE} {{
\tset proxy_ports {{ type inet_proto . inet_service; }}
\tchain input {{
\t\ttype filter hook input priority filter - 5; policy accept;
\t\tiifname "{HOST_VETH_PATTERN}" ct state established,related accept
\t\tiifname "{HOST_VETH_PATTERN}" meta l4proto . th dport @proxy_ports accept
\t\tiifname "{HOST_VETH_PATTERN}" counter drop
\t\tiifname != "lo" meta l4proto . th dport @proxy_ports counter drop
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter - 5; policy accept;
\t\toifname "{HOST_VETH_PATTERN}" ct state established,related accept
\t\toifname "{HOST_VETH_PATTERN}" counter drop
\t\tiifname "{HOST_VETH_PATTERN}" ip daddr {TRANSIT_NETWORK} counter drop
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr {TRANSIT_NETWORK} oifname != "{HOST_VETH_PATTERN}" masquerade
\t}}
}}
"""


def proxy_port_elements(verb: str, ports: ProxyPorts) -> str:
    """``add`` or ``delete`` this hostd's proxy ports in the host table."""
    elements = f"udp . {ports.dns}, tcp . {ports.dns}, tcp . {ports.http}, tcp . {ports.tls}"
    return f"{verb} element inet {HOST_TABLE} proxy_ports {{ {elements} }}\n"


def _add(name: str, networks: Iterable[IPv4Network]) -> list[str]:
    elements = ", ".join(str(n) for n in networks)
    return [f"add element inet {SLOT_TABLE} {name} {{ {elements} }}"] if elements else []
