"""A sandbox's network on this node: what it enforces now, and a new egress policy.

```
GET /sandboxes/{id}/network            policy, secrets (names and upstreams, never values), drops
PUT /sandboxes/{id}/network/policy     EgressPolicy ─► the slot's sets replaced in place
```
"""

from __future__ import annotations

from fastapi import APIRouter

from isorun_hostd.api.deps import RuntimeDep, SandboxDep
from isorun_hostd.api.models import NodeNetwork
from isorun_hostd.net.spec import EgressPolicy

router = APIRouter(prefix="/sandboxes/{sandbox_id}/network", tags=["network"])


@router.get("", name="get")
async def get(sandbox: SandboxDep) -> NodeNetwork:
    return NodeNetwork.from_spec(sandbox.network, await sandbox.drops())


@router.put("/policy", name="set-policy")
async def set_policy(body: EgressPolicy, sandbox: SandboxDep, runtime: RuntimeDep) -> EgressPolicy:
    return (await runtime.set_policy(sandbox, body)).policy
