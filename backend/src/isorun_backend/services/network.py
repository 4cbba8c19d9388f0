"""Sandbox networks: the egress policy and secrets the backend keeps per sandbox for its node.

```
create    NetworkCreate ─► NetworkSpec, checked against the known profiles ─► node create ─►
          row.network (JSON, secret values in clear: the database is their one home)
restore   the request's network, else that of the snapshot's sandbox (its row, as it is now)
fork      the clones' rows copy the source's (the node gives the clones the source's too)
resume    the row's network goes to the node again: a restarted node has forgotten it
GET       policy and secrets (names, upstreams, header names) from the row; drops from the node
PATCH     running: node set_policy ─► row; hibernated: the row only (the resume applies it)
```
Secret values leave the database only in requests to a node; no answer and no log line carries
them. The backend checks policies against the built-in profiles plus hostd's
``ISORUN_EGRESS_PROFILES_PATH`` (the same file its nodes should read), so an unknown profile is
refused before anything is placed or booted.

``Networks`` is a part of ``SandboxService`` (services.sandboxes), as ``SavedStates`` is.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from isorun_hostd.agent_channel import ChannelError
from isorun_hostd.api.models import network_json
from isorun_hostd.net.apply import NetworkError
from isorun_hostd.net.policy import CompiledPolicy, PolicyError, Profile
from isorun_hostd.net.spec import EgressPolicy, NetworkSpec
from pydantic import ValidationError

from isorun_backend.core.security import Principal
from isorun_backend.models import (
    NetworkCreate,
    NetworkPublic,
    NetworkUpdate,
    SandboxRow,
    SecretPublic,
)
from isorun_backend.nodes import Node, NodeUnavailable
from isorun_backend.services.errors import (
    InternalError,
    InvalidRequest,
    SandboxNotRunning,
    Unavailable,
)
from isorun_backend.services.saved_states import sandbox_row
from isorun_backend.storage import Database

log = logging.getLogger(__name__)


def requested(body: NetworkCreate, profiles: Mapping[str, Profile]) -> NetworkSpec:
    """The network a create asks for, checked.

    Raises:
        InvalidRequest: an unknown profile (naming the known ones), a bad allow or deny entry,
            or two secrets of one name.
    """
    try:
        spec = body.spec()
    except ValidationError as exc:
        raise InvalidRequest(_first_error(exc), field="network") from exc
    check(spec.policy, profiles)
    return spec


def check(policy: EgressPolicy, profiles: Mapping[str, Profile]) -> None:
    """Raises: InvalidRequest, naming the profile or entry that does not compile."""
    try:
        CompiledPolicy.from_policy(policy, profiles)
    except PolicyError as exc:
        raise InvalidRequest(str(exc), field="network") from exc


def stored(spec: NetworkSpec | None) -> dict[str, Any] | None:
    """``spec`` as the ``network`` column keeps it."""
    return network_json(spec) if spec is not None else None


def loaded(column: dict[str, Any] | None) -> NetworkSpec | None:
    return NetworkSpec.model_validate(column) if column is not None else None


def public(spec: NetworkSpec | None, drops: dict[str, int] | None) -> NetworkPublic:
    spec = spec or NetworkSpec()
    return NetworkPublic(
        profile=spec.policy.profile,
        allow=list(spec.policy.allow),
        deny=list(spec.policy.deny),
        secrets=[SecretPublic.from_spec(secret) for secret in spec.secrets],
        drops=drops,
    )


def _first_error(exc: ValidationError) -> str:
    # The message only: pydantic's own str() would quote the input, secret values included.
    error = exc.errors(include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


class Networks:
    """GET and PATCH of a sandbox's network; mixed into ``SandboxService``, whose ``__init__``
    sets the attributes declared here."""

    _db: Database
    _profiles: Mapping[str, Profile]
    _live: dict[str, Node]
    _locks: defaultdict[str, asyncio.Lock]

    async def _network_row(self, principal: Principal, sandbox_id: str) -> SandboxRow:
        async with self._db.session() as session:
            return await sandbox_row(session, principal, sandbox_id)

    async def network(self, principal: Principal, sandbox_id: str) -> NetworkPublic:
        """The sandbox's policy and secrets (never their values), and, while it runs, the
        packets its namespace refused.

        Raises:
            SandboxNotFound.
        """
        row = await self._network_row(principal, sandbox_id)
        drops = None
        node = self._live.get(sandbox_id)
        if row.state == "running" and node is not None:
            try:
                drops = (await node.network(sandbox_id)).drops
            except (NodeUnavailable, ChannelError, NetworkError) as exc:
                # The policy is the row's either way; only the counters are missing.
                log.warning("sandbox %s: no drop counters: %s", sandbox_id, exc)
        return public(loaded(row.network), drops)

    async def update_network(
        self, principal: Principal, sandbox_id: str, body: NetworkUpdate
    ) -> NetworkPublic:
        """Change the sandbox's egress policy: what ``body`` gives replaces the current value.
        A running sandbox's node applies it at once; a hibernated one gets it on resume.

        Raises:
            SandboxNotFound, SandboxNotRunning (stopped or failed), InvalidRequest (the policy
            does not compile), Unavailable (its node does not answer), InternalError (the
            node could not apply it; the old policy stays).
        """
        async with self._locks[sandbox_id]:
            row = await self._network_row(principal, sandbox_id)
            if row.state not in ("running", "hibernated"):
                raise SandboxNotRunning(sandbox_id, row.state, what="a network change")
            spec = loaded(row.network) or NetworkSpec()
            changes = body.model_dump(exclude_none=True)
            try:
                policy = EgressPolicy.model_validate({**spec.policy.model_dump(), **changes})
            except ValidationError as exc:
                raise InvalidRequest(_first_error(exc), field="network") from exc
            check(policy, self._profiles)
            if row.state == "running":
                node = self._live.get(sandbox_id)
                if node is None:
                    raise Unavailable(f"node {row.node} of sandbox {sandbox_id} does not answer")
                policy = await self._apply(node, sandbox_id, policy)
            spec = spec.model_copy(update={"policy": policy})
            async with self._db.session() as session, session.begin():
                current = await session.get(SandboxRow, sandbox_id)
                assert current is not None
                current.network = stored(spec)
        log.info("sandbox %s: egress policy now %s", sandbox_id, policy.model_dump())
        return await self.network(principal, sandbox_id)

    async def _apply(self, node: Node, sandbox_id: str, policy: EgressPolicy) -> EgressPolicy:
        try:
            return await node.set_policy(sandbox_id, policy)
        except ValueError as exc:
            raise InvalidRequest(str(exc), field="network") from exc
        except ChannelError as exc:
            raise SandboxNotRunning(sandbox_id, "stopped", what="a network change") from exc
        except NetworkError as exc:
            raise InternalError(
                f"the new egress policy could not be applied; the old one stays: {exc}",
                sandbox_id=sandbox_id,
            ) from exc
