"""Processes in a sandbox: list them and send them signals, through the agent."""

from __future__ import annotations

from isorun_hostd.agent_channel import AgentError, ChannelError

from isorun_backend.core.security import Principal
from isorun_backend.models import ProcessList, ProcessPublic
from isorun_backend.services.errors import InternalError, NotFound
from isorun_backend.services.sandboxes import SandboxService


class ProcessService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def listing(self, principal: Principal, sandbox_id: str) -> ProcessList:
        """The processes the agent started (running, or ended within its exit TTL).

        Raises:
            SandboxNotFound, SandboxNotRunning, InternalError.
        """
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        try:
            listing = await sandbox.node.processes(sandbox_id)
        except AgentError as exc:
            raise InternalError(f"ps failed in the guest: {exc}", sandbox_id=sandbox_id) from exc
        except ChannelError as exc:
            raise self._sandboxes.lost(sandbox_id, exc) from exc
        return ProcessList(
            data=[ProcessPublic.model_validate(p.model_dump()) for p in listing.processes]
        )

    async def signal(self, principal: Principal, sandbox_id: str, pid: int, signum: int) -> None:
        """Send ``signum`` to the process group of ``pid``.

        Raises:
            SandboxNotFound, SandboxNotRunning, NotFound (no such process), InternalError.
        """
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        try:
            await sandbox.node.signal(sandbox_id, pid, signum)
        except AgentError as exc:
            if exc.code == "not_found":
                raise NotFound(f"no process {pid}", sandbox_id=sandbox_id) from exc
            raise InternalError(
                f"signal failed in the guest: {exc}", sandbox_id=sandbox_id
            ) from exc
        except ChannelError as exc:
            raise self._sandboxes.lost(sandbox_id, exc) from exc
