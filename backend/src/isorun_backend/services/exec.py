"""Exec: run a command in a sandbox, buffered or as a stream of events.

```
start     sandbox env  <  request env   ─► agent exec (image defaults under both, in hostd)
          stdin given: written whole (at most one credit window), then closed
buffered  output collected per stream up to MAX_OUTPUT_BYTES (the rest is read and dropped)
stream    ExecStartEvent ─► ExecOutputEvent* ─► ExecExitEvent; errors after the start raise
          from the iterator (the route turns them into a last "error" line)
```

A streamed exec whose reader goes away is detached, not killed: the process keeps running in
the guest, bounded by its own ``timeout_s``, and can be listed and signalled under processes.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Literal

from isorun_hostd.agent_channel import AgentError, Channel, ChannelError
from isorun_hostd.sandboxes import ExecOptions

from isorun_backend.core.security import Principal
from isorun_backend.models import (
    MAX_OUTPUT_BYTES,
    ExecCreate,
    ExecEvent,
    ExecExitEvent,
    ExecOutputEvent,
    ExecResult,
    ExecStartEvent,
)
from isorun_backend.nodes import NodeProcess
from isorun_backend.services.errors import InvalidRequest, ServiceError
from isorun_backend.services.sandboxes import Running, SandboxService

_CHANNEL_NAMES: dict[Channel, Literal["stdout", "stderr"]] = {
    Channel.STDOUT: "stdout",
    Channel.STDERR: "stderr",
}


class ExecService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def run(self, principal: Principal, sandbox_id: str, body: ExecCreate) -> ExecResult:
        """Run to the end and return the (capped) output.

        Raises:
            SandboxNotFound, SandboxNotRunning, InvalidRequest (the guest could not start it:
            no such program, user or folder), InternalError.
        """
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        process = await self._start(sandbox, body)
        kept = {Channel.STDOUT: bytearray(), Channel.STDERR: bytearray()}
        truncated = False
        try:
            async for chunk in process.output():
                buffer = kept[chunk.channel]
                room = MAX_OUTPUT_BYTES - len(buffer)
                if len(chunk.data) > room:
                    truncated = True
                buffer += chunk.data[: max(room, 0)]
            end = await process.wait()
        except ChannelError as exc:
            raise self._sandboxes.lost(sandbox_id, exc) from exc
        return ExecResult(
            exit_code=end.exit_code,
            signal=end.signal,
            timed_out=end.timed_out,
            duration_ms=end.duration_ms,
            stdout=kept[Channel.STDOUT].decode(errors="replace"),
            stderr=kept[Channel.STDERR].decode(errors="replace"),
            truncated=truncated,
        )

    async def stream(
        self, principal: Principal, sandbox_id: str, body: ExecCreate
    ) -> AsyncIterator[ExecEvent]:
        """Start the process now (so that start failures raise here) and return its events.

        Raises:
            As ``run``, from this call; the iterator raises ServiceError if the sandbox is lost.
        """
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        process = await self._start(sandbox, body)
        return self._events(sandbox_id, process)

    async def _events(self, sandbox_id: str, process: NodeProcess) -> AsyncIterator[ExecEvent]:
        finished = False
        try:
            yield ExecStartEvent(pid=process.pid)
            async for chunk in process.output():
                data = base64.b64encode(chunk.data).decode()
                yield ExecOutputEvent(type=_CHANNEL_NAMES[chunk.channel], data=data)
            end = await process.wait()
            finished = True
            yield ExecExitEvent(
                exit_code=end.exit_code,
                signal=end.signal,
                timed_out=end.timed_out,
                duration_ms=end.duration_ms,
            )
        except ChannelError as exc:
            raise self._sandboxes.lost(sandbox_id, exc) from exc
        finally:
            if not finished:
                await process.detach()

    async def _start(self, sandbox: Running, body: ExecCreate) -> NodeProcess:
        options: ExecOptions = {
            "env": {**sandbox.env, **body.env},
            "stdin": body.stdin is not None,
            "timeout_s": body.timeout_s,
        }
        if body.cwd:
            options["cwd"] = body.cwd
        if body.user:
            options["user"] = body.user
        # Stdin is at most one credit window (ExecCreate caps it), so the node writes it whole
        # without waiting on the process to read: the agent buffers it all.
        stdin = body.stdin.encode() if body.stdin is not None else None
        try:
            process = await sandbox.node.exec(sandbox.id, body.command, options, stdin)
        except AgentError as exc:
            raise _start_error(exc, sandbox.id) from exc
        except ChannelError as exc:
            raise self._sandboxes.lost(sandbox.id, exc) from exc
        return process


def _start_error(exc: AgentError, sandbox_id: str) -> ServiceError:
    """A process the guest could not start is the request's fault (command, cwd or user)."""
    error = InvalidRequest(
        f"the guest could not start it: {exc.code}: {exc.message}", field="command"
    )
    error.sandbox_id = sandbox_id
    return error
