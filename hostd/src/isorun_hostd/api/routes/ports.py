"""A TCP connection to a port on a sandbox's loopback, carried by a WebSocket (spec/node.md
"Ports"): the backend's way in for public URLs.

```
server → client   text {"event": "connected"} first; binary: the guest socket's bytes;
                  text {"event": "eof"} once the guest side has closed
client → server   binary: bytes for the guest socket; text {"op": "eof"}: half-close it
close             4000 + the NodeProblem's status before "connected" (reason: close_reason),
                  1000 once both sides sent their eof, 1007 after a bad frame from the
                  client, 1011 when the tunnel or the channel broke
```
The client going away drops the guest connection at once.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from isorun_hostd.agent_channel import ChannelError, Tunnel
from isorun_hostd.api.deps import websocket_sandbox
from isorun_hostd.api.errors import HANDLED, problem
from isorun_hostd.api.shell_frames import (
    CLOSE_BROKEN,
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    CLOSE_PROBLEM_BASE,
    close_reason,
)
from isorun_hostd.api.shell_socket import close

CONNECTED = json.dumps({"event": "connected"})
EOF_EVENT = json.dumps({"event": "eof"})
EOF_OP = {"op": "eof"}

# A WebSocket is no Request for the HTTP token check, so the route checks the token itself
# (routes/__init__.py includes it outside the guarded routes).
router = APIRouter(prefix="/sandboxes/{sandbox_id}/ports", tags=["ports"])


class _BadFrame(Exception):
    pass


@router.websocket("/{port}/connect", name="connect")
async def connect(websocket: WebSocket, sandbox_id: str, port: int) -> None:
    await websocket.accept()
    try:
        tunnel = await websocket_sandbox(websocket, sandbox_id).connect_port(port)
    except HANDLED as exc:
        code, body = problem(exc)
        reason = close_reason(body.detail, code=body.code, op=body.op, agent_code=body.agent_code)
        await close(websocket, CLOSE_PROBLEM_BASE + code, reason)
        return
    try:
        await websocket.send_text(CONNECTED)
        await _relay(websocket, tunnel)
    except WebSocketDisconnect:
        pass
    except _BadFrame as exc:
        await close(websocket, CLOSE_INVALID_DATA, str(exc))
    except ChannelError as exc:
        await close(websocket, CLOSE_BROKEN, str(exc))
    finally:
        tunnel.close()


async def _relay(websocket: WebSocket, tunnel: Tunnel) -> None:
    """Pump both ways until both sides have sent their eof (then close 1000) or the client has
    gone; raises what either direction raised."""
    client_eof = asyncio.Event()
    output = asyncio.create_task(_to_client(websocket, tunnel))
    intake = asyncio.create_task(_from_client(websocket, tunnel, client_eof))
    eof = asyncio.create_task(client_eof.wait())
    tasks = (output, intake, eof)
    try:
        watched = set(tasks)
        while not (output.done() and eof.done()):
            done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if intake in done or (output in done and output.exception() is not None):
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in (intake, output):
        if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
            raise exc
    if intake.done() and not intake.cancelled():
        return  # the client went away
    await close(websocket, CLOSE_NORMAL)


async def _to_client(websocket: WebSocket, tunnel: Tunnel) -> None:
    # One read at a time, each sent before the next: the agent's window holds the rest back.
    while data := await tunnel.read():
        await websocket.send_bytes(data)
    await websocket.send_text(EOF_EVENT)


async def _from_client(websocket: WebSocket, tunnel: Tunnel, client_eof: asyncio.Event) -> None:
    """Returns when the client goes away; after its eof, only that is expected."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if client_eof.is_set():
            raise _BadFrame("a frame after eof")
        if message.get("bytes") is not None:
            await tunnel.write(message["bytes"])
        elif message.get("text") is not None:
            try:
                is_eof = json.loads(message["text"]) == EOF_OP
            except ValueError:
                is_eof = False
            if not is_eof:
                raise _BadFrame(f"not an eof frame: {message['text'][:80]!r}")
            await tunnel.write_eof()
            client_eof.set()
