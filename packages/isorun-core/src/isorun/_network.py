"""`sb.network`: a sandbox's egress policy and secrets (spec/api.md "Network").

```
Sandbox("python", deny=["0.0.0.0/0"], allow=["pypi.org"],        at create: POST {"network"}
        profile="openai", secrets=[Secret(...)])
sb.network.get()                   GET    -> NetworkInfo (secret names, never values; drops)
sb.network.update(allow=[...])     PATCH  -> NetworkInfo: what is given replaces, the rest stays
```
A sandbox starts with no egress at all. Secrets are given once, at create: the guest sees a
placeholder in `name`, and the host's proxy puts the value into requests to `upstream` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from isorun import _routes
from isorun._base import parse_model
from isorun._models import NetworkInfo

if TYPE_CHECKING:
    from isorun._client import AsyncClient, Client


class Network:
    """A sandbox's network, through a `Client`."""

    def __init__(self, client: Client, sandbox_id: str) -> None:
        self._client = client
        self._sandbox_id = sandbox_id

    def get(self) -> NetworkInfo:
        """The policy, the secrets (names and upstreams), and the packets refused so far.

        Raises:
            SandboxNotFound: The sandbox is gone.
        """
        return parse_model(NetworkInfo, self._client.send(_routes.get_network(self._sandbox_id)))

    def update(
        self,
        *,
        profile: str | None = None,
        allow: Sequence[str] | None = None,
        deny: Sequence[str] | None = None,
    ) -> NetworkInfo:
        """Change the egress policy: each argument given replaces the current value, the others
        stay (`allow=[]` empties the allow list). A running sandbox gets it at once, a
        hibernated one on resume. Secrets cannot change.

        Raises:
            InvalidRequest: An unknown profile (the message lists the known ones) or a bad
                entry.
            SandboxStateError: The sandbox is stopped.
            SandboxNotFound: The sandbox is gone.
        """
        req = _routes.update_network(self._sandbox_id, profile=profile, allow=allow, deny=deny)
        return parse_model(NetworkInfo, self._client.send(req))


class AsyncNetwork:
    """A sandbox's network, through an `AsyncClient`; as `Network`."""

    def __init__(self, client: AsyncClient, sandbox_id: str) -> None:
        self._client = client
        self._sandbox_id = sandbox_id

    async def get(self) -> NetworkInfo:
        """As `Network.get`."""
        answer = await self._client.send(_routes.get_network(self._sandbox_id))
        return parse_model(NetworkInfo, answer)

    async def update(
        self,
        *,
        profile: str | None = None,
        allow: Sequence[str] | None = None,
        deny: Sequence[str] | None = None,
    ) -> NetworkInfo:
        """As `Network.update`."""
        req = _routes.update_network(self._sandbox_id, profile=profile, allow=allow, deny=deny)
        return parse_model(NetworkInfo, await self._client.send(req))
