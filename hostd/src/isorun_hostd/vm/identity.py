"""A fresh guest identity for a VM restored from a snapshot (protocol.md 5.1.1).

A template, a fork or a resumed hibernation starts with the snapshot's RNG state, its stale
wall clock, its hostname and its machine-id, all shared with every other copy of that snapshot.
Before such a guest is handed out, the host sends it ``AgentChannel.identity(fresh_identity(...))``.
"""

from __future__ import annotations

import os
import time
import uuid

from isorun_hostd.agent_channel.protocol import IdentityRequest

# 512 bits: twice what the kernel needs to consider its CRNG fully seeded, well under the
# protocol's 512-byte cap.
ENTROPY_BYTES = 64


def fresh_identity(hostname: str, *, machine_id: bool = True) -> IdentityRequest:
    """A new identity: random seed, the host's wall clock now, ``hostname``, a random machine-id
    (without ``machine_id`` the guest keeps its own: for a warm-pool entry, whose warm-up gave
    it one that no other guest has, this spares the file write, ~8 ms under TCG).

    Build it just before sending: ``time_unix_ns`` is read here, so any delay before the
    guest applies it puts the guest's clock behind by that much.

    Raises:
        pydantic.ValidationError: ``hostname`` is not a DNS label.
    """
    return IdentityRequest(
        entropy=os.urandom(ENTROPY_BYTES),
        time_unix_ns=time.time_ns(),
        hostname=hostname,
        machine_id=uuid.uuid4().hex if machine_id else None,
    )
