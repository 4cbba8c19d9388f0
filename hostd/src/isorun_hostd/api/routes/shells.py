"""Shells in a sandbox (spec/node.md "Shells"): open, list, resize, signal, close, and the
attach WebSocket, whose frames are spec/api.md's.

The attach is refused before ``start`` with 4000 + the NodeProblem's status and the problem as
JSON in the reason (``agent_code`` too, for the backend to tell an unknown shell from a busy
guest); once started, a broken channel closes it with 1011.
"""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Response, WebSocket, status

from isorun_hostd.agent_channel import ChannelError
from isorun_hostd.agent_channel.protocol import ShellList, ShellOpened
from isorun_hostd.api.deps import SandboxDep, websocket_sandbox
from isorun_hostd.api.errors import HANDLED, problem
from isorun_hostd.api.models import NodeShellCreate, NodeShellResize, NodeShellSignal
from isorun_hostd.api.shell_frames import CLOSE_BROKEN, CLOSE_PROBLEM_BASE, close_reason
from isorun_hostd.api.shell_socket import ChannelTerminal, close, relay

router = APIRouter(prefix="/sandboxes/{sandbox_id}/shells", tags=["shells"])
attach_router = APIRouter(prefix="/sandboxes/{sandbox_id}/shells", tags=["shells"])


@router.post("", name="open", status_code=status.HTTP_201_CREATED)
async def open_shell(body: NodeShellCreate, sandbox: SandboxDep) -> ShellOpened:
    return await sandbox.open_shell(
        body.command,
        env=body.env,
        cwd=body.cwd,
        user=body.user,
        cols=body.cols,
        rows=body.rows,
        scrollback_bytes=body.scrollback_bytes,
    )


@router.get("", name="list")
async def listing(sandbox: SandboxDep) -> ShellList:
    return ShellList(shells=await sandbox.channel.list_shells())


@router.post(
    "/{shell_id}/resize",
    name="resize",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def resize(shell_id: str, body: NodeShellResize, sandbox: SandboxDep) -> None:
    await sandbox.channel.resize_shell(shell_id, cols=body.cols, rows=body.rows)


@router.post(
    "/{shell_id}/signal",
    name="signal",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def send_signal(shell_id: str, body: NodeShellSignal, sandbox: SandboxDep) -> None:
    await sandbox.channel.signal_shell(shell_id, body.signal, target=body.target)


@router.delete(
    "/{shell_id}",
    name="close",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def close_shell(shell_id: str, sandbox: SandboxDep) -> None:
    await sandbox.close_shell(shell_id)


@attach_router.websocket("/{shell_id}/attach", name="attach")
async def attach(
    websocket: WebSocket,
    sandbox_id: str,
    shell_id: str,
    write: bool = False,
    scrollback: bool = True,
) -> None:
    await websocket.accept()
    async with contextlib.AsyncExitStack() as stack:
        try:
            sandbox = websocket_sandbox(websocket, sandbox_id)
            attachment = await stack.enter_async_context(
                sandbox.attached_shell(shell_id, write=write, scrollback=scrollback)
            )
        except HANDLED as exc:
            code, body = problem(exc)
            reason = close_reason(body.detail, code=body.code, agent_code=body.agent_code)
            await close(websocket, CLOSE_PROBLEM_BASE + code, reason)
            return
        try:
            await relay(websocket, ChannelTerminal(attachment, sandbox.channel))
        except ChannelError as exc:
            await close(websocket, CLOSE_BROKEN, str(exc))
