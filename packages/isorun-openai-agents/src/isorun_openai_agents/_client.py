"""`IsorunSandboxClient`: the Agents SDK's `BaseSandboxClient` that boots isorun VMs.

```python
run_config = RunConfig(sandbox=SandboxRunConfig(client=IsorunSandboxClient()))
```
Connection settings are the isorun SDK's: `api_url` / `api_key` arguments, else the
`ISORUN_API_URL` / `ISORUN_API_KEY` environment. Without a shared `isorun.AsyncClient`, each
VM gets its own HTTP client, closed when the VM is destroyed.

Lifecycle, as the SDK's runner drives it: `create` boots a VM; the session's `start` lays out
the workspace; `aclose` persists the workspace to the run's snapshot, then destroys the VM;
`delete` destroys it too (idempotent) for callers that skip `aclose`. `resume` reattaches to
the VM named in the state if it is still running, else boots a replacement that the SDK
hydrates from the snapshot.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import isorun
from agents.sandbox.manifest import Manifest
from agents.sandbox.session.dependencies import Dependencies
from agents.sandbox.session.manager import Instrumentation
from agents.sandbox.session.sandbox_client import BaseSandboxClient
from agents.sandbox.session.sandbox_session import SandboxSession
from agents.sandbox.session.sandbox_session_state import SandboxSessionState
from agents.sandbox.snapshot import SnapshotBase, SnapshotSpec, resolve_snapshot

from isorun_openai_agents._options import IsorunSandboxClientOptions
from isorun_openai_agents._session import IsorunSandboxSession, IsorunSandboxSessionState


class IsorunSandboxClient(BaseSandboxClient[IsorunSandboxClientOptions]):
    """Creates, resumes and deletes `IsorunSandboxSession`s.

    Args:
        api_url: The isorun API; default `ISORUN_API_URL`.
        api_key: Its key; default `ISORUN_API_KEY`.
        client: A shared `isorun.AsyncClient`, instead of `api_url` / `api_key` / `transport`.
        transport: An httpx transport, such as `isorun.testing.FakeBackend`.
        secrets: `isorun.Secret`s every VM gets: the host injects each into requests to its
            upstream, the guest sees a placeholder. Held here, never in the options that are
            serialized with run state.
        instrumentation: The SDK's session event instrumentation.
        dependencies: The SDK's per-session dependency template.

    Example:
        ```python
        client = IsorunSandboxClient()
        config = SandboxRunConfig(client=client, options=IsorunSandboxClientOptions(image="python"))
        ```
    """

    backend_id = "isorun"
    supports_default_options = True

    def __init__(
        self,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        client: isorun.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        secrets: Sequence[isorun.Secret] = (),
        instrumentation: Instrumentation | None = None,
        dependencies: Dependencies | None = None,
    ) -> None:
        if client is not None and (api_url or api_key or transport):
            raise isorun.UsageError("pass either client= or api_url/api_key/transport")
        self._connection: dict[str, Any] = (
            {"client": client}
            if client is not None
            else {"api_url": api_url, "api_key": api_key, "transport": transport}
        )
        self._secrets = tuple(secrets)
        self._instrumentation = instrumentation or Instrumentation()
        self._dependencies = dependencies

    async def create(
        self,
        *,
        snapshot: SnapshotSpec | SnapshotBase | None = None,
        manifest: Manifest | None = None,
        options: IsorunSandboxClientOptions | None = None,
    ) -> SandboxSession:
        """Boot a VM and return its (not yet started) session.

        Raises:
            isorun.IsorunError: The VM could not be created (image, quota, API errors).
        """
        options = options or IsorunSandboxClientOptions()
        manifest = self._validate_manifest_for_create(manifest or Manifest())
        sandbox = await self._boot(options)
        session_id = uuid.uuid4()
        state = IsorunSandboxSessionState(
            session_id=session_id,
            manifest=manifest,
            snapshot=resolve_snapshot(snapshot, str(session_id)),
            sandbox_id=sandbox.id,
            options=options,
            exposed_ports=options.exposed_ports,
        )
        inner = IsorunSandboxSession(state=state, sandbox=sandbox)
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    async def delete(self, session: SandboxSession) -> SandboxSession:
        """Destroy the session's VM (a VM already gone counts as destroyed).

        Raises:
            TypeError: Not a session of this client.
        """
        inner = session._inner
        if not isinstance(inner, IsorunSandboxSession):
            raise TypeError("IsorunSandboxClient.delete expects an IsorunSandboxSession")
        await inner.shutdown()
        return session

    async def resume(self, state: SandboxSessionState) -> SandboxSession:
        """Reattach to the state's VM if it still runs, else boot a replacement.

        Raises:
            TypeError: Not an `IsorunSandboxSessionState`.
            isorun.IsorunError: A replacement VM could not be created.
        """
        if not isinstance(state, IsorunSandboxSessionState):
            raise TypeError("IsorunSandboxClient.resume expects an IsorunSandboxSessionState")
        state.assert_path_grants_rebound()
        sandbox = await self._reattach(state.sandbox_id)
        reattached = sandbox is not None
        if sandbox is None:
            sandbox = await self._boot(state.options)
            state.sandbox_id = sandbox.id
            state.workspace_root_ready = False
        inner = IsorunSandboxSession(state=state, sandbox=sandbox)
        inner._set_start_state_preserved(reattached)
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    def deserialize_session_state(self, payload: dict[str, object]) -> SandboxSessionState:
        return self._deserialize_session_state_payload(payload, IsorunSandboxSessionState)

    async def _boot(self, options: IsorunSandboxClientOptions) -> isorun.AsyncSandbox:
        return await isorun.AsyncSandbox.create(
            options.image,
            vcpus=options.vcpus,
            memory_mib=options.memory_mib,
            timeout_s=options.timeout_s,
            env=options.env,
            labels=options.labels,
            allow=options.allow,
            deny=options.deny,
            profile=options.profile,
            secrets=self._secrets,
            **self._connection,
        )

    async def _reattach(self, sandbox_id: str) -> isorun.AsyncSandbox | None:
        try:
            sandbox = await isorun.AsyncSandbox.connect(sandbox_id, **self._connection)
        except isorun.SandboxNotFound:
            return None
        if sandbox.info.state == "running":
            return sandbox
        await sandbox.aclose()
        return None
