"""Shells: terminals in a sandbox that outlive their clients (spec/api.md "Shells").

```
open     sandbox env  <  request env  ─► node shell_open (image defaults under both, in hostd)
attach   a NodeShell whose errors are ServiceErrors; the caller detaches it when done
list, resize, signal, close  ─► the node, an unknown shell is NotFound
```
A hibernated sandbox is resumed first, as for exec. The guest's refusals: ``busy`` (too many
shells or streams) is Conflict; an unknown shell NotFound; a command it cannot start
InvalidRequest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from isorun_hostd.agent_channel import AgentError, ChannelError, ShellEnd, ShellEvent
from isorun_hostd.agent_channel.protocol import ShellInfo
from isorun_hostd.api.models import NodeShellCreate
from isorun_hostd.api.shell_frames import SignalTarget

from isorun_backend.core.security import Principal
from isorun_backend.models import ShellCreate, ShellList, ShellPublic
from isorun_backend.nodes import NodeShell
from isorun_backend.services.errors import Conflict, InternalError, InvalidRequest, NotFound
from isorun_backend.services.sandboxes import SandboxService


class ShellService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def open(self, principal: Principal, sandbox_id: str, body: ShellCreate) -> ShellPublic:
        """Start a shell; it runs until it exits or is closed, attached or not.

        Raises:
            SandboxNotFound, SandboxNotRunning, InvalidRequest (the guest could not start it),
            Conflict (the sandbox has the most shells it may), InternalError.
        """
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        request = NodeShellCreate(
            command=body.command,
            env={**sandbox.env, **body.env},
            cwd=body.cwd,
            user=body.user,
            cols=body.cols,
            rows=body.rows,
            scrollback_bytes=body.scrollback_bytes,
        )
        try:
            opened = await sandbox.node.open_shell(sandbox_id, request)
        except AgentError as exc:
            if exc.code == "busy":
                raise Conflict(f"too many shells: {exc.message}", sandbox_id=sandbox_id) from exc
            error = InvalidRequest(
                f"the guest could not start it: {exc.code}: {exc.message}", field="command"
            )
            error.sandbox_id = sandbox_id
            raise error from exc
        except ChannelError as exc:
            raise self._sandboxes.lost(sandbox_id, exc) from exc
        with _translated(self._sandboxes, sandbox_id, opened.id):
            shells = await sandbox.node.shells(sandbox_id)
        info = next((shell for shell in shells if shell.id == opened.id), None)
        if info is None:
            # Closed by another client between the open and the listing.
            raise NotFound(f"shell {opened.id} ended already", sandbox_id=sandbox_id)
        return _public(info)

    async def listing(self, principal: Principal, sandbox_id: str) -> ShellList:
        """Running shells and those ended within the last 5 minutes.

        Raises:
            SandboxNotFound, SandboxNotRunning, InternalError.
        """
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        with _translated(self._sandboxes, sandbox_id, None):
            shells = await sandbox.node.shells(sandbox_id)
        return ShellList(data=[_public(shell) for shell in shells])

    async def resize(
        self, principal: Principal, sandbox_id: str, shell_id: str, cols: int, rows: int
    ) -> None:
        """Raises: SandboxNotFound, SandboxNotRunning, NotFound, InternalError."""
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        with _translated(self._sandboxes, sandbox_id, shell_id):
            await sandbox.node.resize_shell(sandbox_id, shell_id, cols, rows)

    async def signal(
        self,
        principal: Principal,
        sandbox_id: str,
        shell_id: str,
        signum: int,
        target: SignalTarget,
    ) -> None:
        """Raises: SandboxNotFound, SandboxNotRunning, NotFound, InternalError."""
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        with _translated(self._sandboxes, sandbox_id, shell_id):
            await sandbox.node.signal_shell(sandbox_id, shell_id, signum, target)

    async def close(self, principal: Principal, sandbox_id: str, shell_id: str) -> None:
        """Hang the shell up (SIGKILL after 2 s) and forget it.

        Raises: SandboxNotFound, SandboxNotRunning, NotFound, InternalError.
        """
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        with _translated(self._sandboxes, sandbox_id, shell_id):
            await sandbox.node.close_shell(sandbox_id, shell_id)

    async def attach(
        self,
        principal: Principal,
        sandbox_id: str,
        shell_id: str,
        *,
        write: bool,
        scrollback: bool,
    ) -> NodeShell:
        """Follow a shell; ``detach`` the answer when done (the shell keeps running).

        Raises:
            SandboxNotFound, SandboxNotRunning, NotFound, Conflict (the guest has too many
            streams), InternalError; the shell's methods raise InternalError or
            SandboxNotRunning when the sandbox breaks or stops under it.
        """
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        with _translated(self._sandboxes, sandbox_id, shell_id):
            shell = await sandbox.node.attach_shell(
                sandbox_id, shell_id, write=write, scrollback=scrollback
            )
        attached = contextlib.ExitStack()
        attached.enter_context(self._sandboxes.attached(sandbox_id))
        return _TranslatedShell(self._sandboxes, sandbox_id, shell, attached)


@contextmanager
def _translated(sandboxes: SandboxService, sandbox_id: str, shell_id: str | None) -> Iterator[None]:
    """The guest's and the channel's errors as the service's."""
    try:
        yield
    except AgentError as exc:
        if exc.code == "not_found" and shell_id is not None:
            raise NotFound(f"no shell {shell_id!r}", sandbox_id=sandbox_id) from exc
        if exc.code == "busy":
            raise Conflict(f"the guest is busy: {exc.message}", sandbox_id=sandbox_id) from exc
        raise InternalError(str(exc), sandbox_id=sandbox_id) from exc
    except ChannelError as exc:
        raise sandboxes.lost(sandbox_id, exc) from exc


class _TranslatedShell:
    """A NodeShell whose errors are the service's."""

    def __init__(
        self,
        sandboxes: SandboxService,
        sandbox_id: str,
        shell: NodeShell,
        attached: contextlib.ExitStack,
    ) -> None:
        self._sandboxes = sandboxes
        self._sandbox_id = sandbox_id
        self._shell = shell
        # Holds the sandbox awake (SandboxService.attached) until detach.
        self._attached = attached

    @property
    def pid(self) -> int:
        return self._shell.pid

    @property
    def cols(self) -> int:
        return self._shell.cols

    @property
    def rows(self) -> int:
        return self._shell.rows

    @property
    def writer(self) -> bool:
        return self._shell.writer

    @property
    def end(self) -> ShellEnd | None:
        return self._shell.end

    async def events(self) -> AsyncIterator[bytes | ShellEvent]:
        with _translated(self._sandboxes, self._sandbox_id, None):
            async for item in self._shell.events():
                yield item

    async def write(self, data: bytes) -> None:
        with _translated(self._sandboxes, self._sandbox_id, None):
            await self._shell.write(data)

    async def resize(self, cols: int, rows: int) -> None:
        with _translated(self._sandboxes, self._sandbox_id, None):
            await self._shell.resize(cols, rows)

    async def signal(self, signum: int, target: SignalTarget) -> None:
        with _translated(self._sandboxes, self._sandbox_id, None):
            await self._shell.signal(signum, target)

    async def detach(self) -> None:
        try:
            await self._shell.detach()
        finally:
            self._attached.close()


def _public(shell: ShellInfo) -> ShellPublic:
    return ShellPublic(
        id=shell.id,
        pid=shell.pid,
        command=shell.argv,
        cols=shell.cols,
        rows=shell.rows,
        running=shell.running,
        exit_code=shell.exit_code,
        signal=shell.signal,
        attached=shell.attached,
        writer=shell.writer,
        started_at=dt.datetime.fromtimestamp(shell.started_unix_ms / 1000, dt.UTC),
    )
