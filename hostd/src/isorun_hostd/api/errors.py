"""The only map from hostd's errors to the node API's HTTP answers (a NodeProblem body).

```
exception                          status  code
Unauthorized                       401     unauthorized
UnknownSandbox                     404     sandbox_not_found
SnapshotNotFound                   404     snapshot_not_found   (no such snapshot/hibernation)
DuplicateSandbox                   409     sandbox_exists
NoRoom                             503     no_room
ImageError                         422     image        (reference, error = class name)
AgentError                         400     agent        (op, agent_code)
ChannelError (closed, violation)   502     channel
BootTimeout                        504     vm
StateError                         409     vm_state     (the VM cannot be saved in its state)
SnapshotError                      500     snapshot     (a save or restore failed)
VMError                            500     vm
NetworkError                       500     network      (nft or ip refused a sandbox's network)
ValueError (bad request, PolicyError)  400 invalid_request
```
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from isorun_hostd.agent_channel import AgentError, ChannelError
from isorun_hostd.api.models import NodeProblem
from isorun_hostd.images import ImageError
from isorun_hostd.net.apply import NetworkError
from isorun_hostd.sandboxes import DuplicateSandbox, NoRoom
from isorun_hostd.snapshots import SnapshotNotFound
from isorun_hostd.vm import VMError
from isorun_hostd.vm.errors import BootTimeout, SnapshotError, StateError


class Unauthorized(Exception):
    """No node token, or the wrong one."""


class UnknownSandbox(Exception):
    """No sandbox {sandbox_id} on this node."""

    def __init__(self, sandbox_id: str) -> None:
        super().__init__(f"no sandbox {sandbox_id} on this node")


_STATUS: list[tuple[type[Exception], int, str]] = [
    (Unauthorized, 401, "unauthorized"),
    (UnknownSandbox, 404, "sandbox_not_found"),
    (SnapshotNotFound, 404, "snapshot_not_found"),
    (DuplicateSandbox, 409, "sandbox_exists"),
    (NoRoom, 503, "no_room"),
    (ImageError, 422, "image"),
    (AgentError, 400, "agent"),
    (ChannelError, 502, "channel"),
    (BootTimeout, 504, "vm"),
    (StateError, 409, "vm_state"),
    (SnapshotError, 500, "snapshot"),
    (VMError, 500, "vm"),
    (NetworkError, 500, "network"),
    (ValueError, 400, "invalid_request"),
]
HANDLED = tuple(cls for cls, _, _ in _STATUS)


def problem(exc: Exception) -> tuple[int, NodeProblem]:
    """The status and body for ``exc``, one of the HANDLED classes."""
    status, code = next(
        ((status, code) for cls, status, code in _STATUS if isinstance(exc, cls)),
        (500, "internal"),
    )
    body = NodeProblem(code=code, detail=str(exc), error=type(exc).__name__)
    if isinstance(exc, ImageError):
        body.reference = exc.reference
    if isinstance(exc, AgentError):
        body.op, body.agent_code, body.detail = exc.op, exc.code, exc.message
    return status, body


async def _handle(_request: Request, exc: Exception) -> JSONResponse:
    status, body = problem(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    for cls in HANDLED:
        app.add_exception_handler(cls, _handle)
