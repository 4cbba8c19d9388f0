"""What hostd's proxies know about the sandbox at the other end of a connection.

Every sandbox's traffic reaches the host from its own transit address (its namespace NATs the
guest's fixed 10.0.0.2 to it, and drops anything the guest sends from another source), so the
source address of a packet names the sandbox. The proxies look the peer up on every
connection or query: the policy of a running sandbox can change between two of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from isorun_hostd.net.spec import SecretSpec

if TYPE_CHECKING:
    from isorun_hostd.net.policy import CompiledPolicy


class AuditSink(Protocol):
    """Records one audit entry: ``kind`` such as ``egress.dns`` or ``credential.inject``, and
    plain JSON-able ``fields``. Never given a secret's value."""

    def __call__(self, sandbox_id: str, kind: str, fields: Mapping[str, object]) -> None: ...


@dataclass(frozen=True, slots=True)
class Peer:
    """One sandbox as the proxies see it.

    ``admit(addresses, ttl_s)`` opens those IPv4 addresses to this sandbox in the host's
    nftables for ``ttl_s`` seconds (the DNS proxy calls it before answering).
    """

    sandbox_id: str
    policy: CompiledPolicy
    secrets: tuple[SecretSpec, ...]
    admit: Callable[[Sequence[str], int], Awaitable[None]]


PeerLookup = Callable[[str], Peer | None]
"""Source address of a connection or query -> its sandbox, or None (then refuse)."""


def null_audit(sandbox_id: str, kind: str, fields: Mapping[str, object]) -> None:
    """The sink when nothing records: tests of one proxy, hostd run without a backend."""
