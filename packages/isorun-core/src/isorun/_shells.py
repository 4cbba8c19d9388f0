"""`sb.shells`: persistent shells in a sandbox (spec/api.md "Shells"), sync and async.

```
sb.shells.create(cols=100)            POST    -> Shell (a login bash, else /bin/sh)
sb.shells.list()                      GET     -> [Shell]: running, and ended within 5 minutes
sb.shells.resize(id, cols, rows)      POST .../resize
sb.shells.signal(id, sig, target)     POST .../signal ("foreground": the job in front)
sb.shells.close(id)                   DELETE: hang up (SIGHUP, SIGKILL after 2 s)
sb.shells.attach(id, write=True)      WebSocket -> Terminal (`_terminal`); closing it detaches
```
A shell outlives its clients: attach, detach, and attach again to find what it wrote meanwhile
in the scrollback. Many clients may attach at once; one of them, the last to attach with
`write`, is the writer. A call on a hibernated sandbox resumes it first.

Errors common to every method: `NotFound` (no such shell), `SandboxNotFound`,
`SandboxStateError` (the sandbox is stopped), `TransportError`.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from isorun import _routes
from isorun._base import parse_model
from isorun._models import Shell
from isorun._terminal import AsyncTerminal, Terminal, TerminalOpening
from isorun._terminal_wire import attach_params, check_target

if TYPE_CHECKING:
    from isorun._client import AsyncClient, Client

DEFAULT_SCROLLBACK_BYTES = 262144


class Shells:
    """The shells of one sandbox, through a `Client`. Reached as `sb.shells`."""

    def __init__(self, client: Client, sandbox_id: str) -> None:
        self._client = client
        self._sandbox_id = sandbox_id

    def create(
        self,
        command: str | Sequence[str] | None = None,
        *,
        cols: int = 80,
        rows: int = 24,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        scrollback_bytes: int = DEFAULT_SCROLLBACK_BYTES,
    ) -> Shell:
        """Start a shell on a new terminal; it runs until it exits or is closed. Never retried.

        Args:
            command: The argv; a string runs under `/bin/sh -c`; None: a login bash where the
                image has one, else `/bin/sh`.
            cols: Terminal width, 1..1000.
            rows: Terminal height, 1..1000.
            env: Environment variables to add (`TERM=xterm-256color` unless given).
            cwd: Working directory.
            user: User to run as.
            scrollback_bytes: The newest output kept for attaches, 1024..4194304.

        Raises:
            InvalidRequest: The guest cannot start it (no such program, `cwd` or `user`), or a
                value is out of range.
            Conflict: The sandbox has 64 shells already.
            OutcomeUnknown: The answer was lost: a shell may have started (see `list`).
        """
        req = _routes.create_shell(
            self._sandbox_id,
            command,
            cols=cols,
            rows=rows,
            env=env,
            cwd=cwd,
            user=user,
            scrollback_bytes=scrollback_bytes,
        )
        return parse_model(Shell, self._client.send(req))

    def list(self) -> builtins.list[Shell]:
        """The shells running, and those that ended within the last 5 minutes."""
        return [*self._client.paginate(_routes.list_shells(self._sandbox_id), Shell)]

    def resize(self, shell_id: str, cols: int, rows: int) -> None:
        """Resize the terminal; its foreground job gets SIGWINCH."""
        self._client.send(_routes.resize_shell(self._sandbox_id, shell_id, cols, rows))

    def signal(self, shell_id: str, signal: int, target: str = "foreground") -> None:
        """Send `signal` to the job in front (`"foreground"`, as a key would) or to the shell's
        own process group (`"shell"`).

        Raises:
            UsageError: Another target.
        """
        check_target(target)
        self._client.send(_routes.signal_shell(self._sandbox_id, shell_id, signal, target))

    def close(self, shell_id: str) -> None:
        """Hang up the shell (SIGHUP, SIGKILL after 2 s); attached clients see its exit."""
        self._client.send(_routes.close_shell(self._sandbox_id, shell_id))

    def attach(self, shell_id: str, *, write: bool = False, scrollback: bool = True) -> Terminal:
        """Attach to the shell: `with sb.shells.attach(id, write=True) as term: ...`.

        Args:
            shell_id: The shell (`sh-...`).
            write: Become the writer (the previous one becomes a reader); else only read.
            scrollback: Replay the scrollback first, then go on live.

        Returns:
            The open connection; closing it (or leaving its with-block) detaches.

        Raises:
            UsageError: The client sends through a `transport=` (no WebSockets there).
            AuthenticationError, ConnectError, ConnectTimeout, ProtocolError: No attach.
        """
        path = _routes.shell_path(self._sandbox_id, shell_id, "/attach")
        target = self._client.websocket_target(
            path, attach_params(write=write, scrollback=scrollback)
        )
        return Terminal.open(target, sandbox_id=self._sandbox_id, shell_id=shell_id)


class AsyncShells:
    """The shells of one sandbox, through an `AsyncClient`; as `Shells`, awaited."""

    def __init__(self, client: AsyncClient, sandbox_id: str) -> None:
        self._client = client
        self._sandbox_id = sandbox_id

    async def create(
        self,
        command: str | Sequence[str] | None = None,
        *,
        cols: int = 80,
        rows: int = 24,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        scrollback_bytes: int = DEFAULT_SCROLLBACK_BYTES,
    ) -> Shell:
        """As `Shells.create`."""
        req = _routes.create_shell(
            self._sandbox_id,
            command,
            cols=cols,
            rows=rows,
            env=env,
            cwd=cwd,
            user=user,
            scrollback_bytes=scrollback_bytes,
        )
        return parse_model(Shell, await self._client.send(req))

    async def list(self) -> builtins.list[Shell]:
        """As `Shells.list`."""
        req = _routes.list_shells(self._sandbox_id)
        return [shell async for shell in self._client.paginate(req, Shell)]

    async def resize(self, shell_id: str, cols: int, rows: int) -> None:
        """As `Shells.resize`."""
        await self._client.send(_routes.resize_shell(self._sandbox_id, shell_id, cols, rows))

    async def signal(self, shell_id: str, signal: int, target: str = "foreground") -> None:
        """As `Shells.signal`."""
        check_target(target)
        await self._client.send(_routes.signal_shell(self._sandbox_id, shell_id, signal, target))

    async def close(self, shell_id: str) -> None:
        """As `Shells.close`."""
        await self._client.send(_routes.close_shell(self._sandbox_id, shell_id))

    def attach(
        self, shell_id: str, *, write: bool = False, scrollback: bool = True
    ) -> TerminalOpening:
        """As `Shells.attach`: `async with sb.shells.attach(id) as term` (detaches on exit)
        or `term = await sb.shells.attach(id)`."""
        path = _routes.shell_path(self._sandbox_id, shell_id, "/attach")
        params = attach_params(write=write, scrollback=scrollback)

        async def open_() -> AsyncTerminal:
            target = self._client.websocket_target(path, params)
            return await AsyncTerminal.open(target, sandbox_id=self._sandbox_id, shell_id=shell_id)

        return TerminalOpening(open_)
