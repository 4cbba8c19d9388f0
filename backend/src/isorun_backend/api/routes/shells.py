"""spec/api.md "Shells": terminals that outlive their clients, and the attach WebSocket.

The attach authenticates as the HTTP routes do (the API key in ``Authorization``) and refuses
before ``start`` by closing with 4000 + the problem's status, its ``detail`` the reason; once
started, a node or sandbox that breaks closes it with 1011.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response, WebSocket, status
from isorun_hostd.api.shell_frames import CLOSE_BROKEN, CLOSE_PROBLEM_BASE
from isorun_hostd.api.shell_socket import close, relay

from isorun_backend.api.deps import PrincipalDep, ShellsDep, websocket_principal
from isorun_backend.api.errors import CODES, responses
from isorun_backend.models import ShellCreate, ShellList, ShellPublic, ShellResize, ShellSignal
from isorun_backend.services import Services
from isorun_backend.services.errors import ServiceError

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/sandboxes/{sandbox_id}/shells", tags=["shells"], responses=responses(401)
)


@router.post(
    "",
    name="open",
    status_code=status.HTTP_201_CREATED,
    responses=responses(400, 404, 409, 422),
)
async def open_shell(
    sandbox_id: str, body: ShellCreate, principal: PrincipalDep, shells: ShellsDep
) -> ShellPublic:
    return await shells.open(principal, sandbox_id, body)


@router.get("", name="list", responses=responses(404, 409))
async def list_shells(sandbox_id: str, principal: PrincipalDep, shells: ShellsDep) -> ShellList:
    return await shells.listing(principal, sandbox_id)


@router.post(
    "/{shell_id}/resize",
    name="resize",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(404, 409, 422),
)
async def resize_shell(
    sandbox_id: str, shell_id: str, body: ShellResize, principal: PrincipalDep, shells: ShellsDep
) -> None:
    await shells.resize(principal, sandbox_id, shell_id, body.cols, body.rows)


@router.post(
    "/{shell_id}/signal",
    name="signal",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(404, 409, 422),
)
async def signal_shell(
    sandbox_id: str, shell_id: str, body: ShellSignal, principal: PrincipalDep, shells: ShellsDep
) -> None:
    await shells.signal(principal, sandbox_id, shell_id, body.signal, body.target)


@router.delete(
    "/{shell_id}",
    name="close",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(404, 409),
)
async def close_shell(
    sandbox_id: str, shell_id: str, principal: PrincipalDep, shells: ShellsDep
) -> None:
    await shells.close(principal, sandbox_id, shell_id)


@router.websocket("/{shell_id}/attach", name="attach")
async def attach(
    websocket: WebSocket,
    sandbox_id: str,
    shell_id: str,
    write: bool = False,
    scrollback: bool = True,
) -> None:
    await websocket.accept()
    services: Services = websocket.app.state.services
    try:
        principal = await websocket_principal(websocket)
        shell = await services.shells.attach(
            principal, sandbox_id, shell_id, write=write, scrollback=scrollback
        )
    except ServiceError as exc:
        await close(websocket, CLOSE_PROBLEM_BASE + CODES[exc.code][0], exc.detail)
        return
    except Exception:
        log.exception("shell attach of %s/%s failed", sandbox_id, shell_id)
        await close(websocket, CLOSE_BROKEN, "internal error")
        return
    try:
        await relay(websocket, shell)
    except ServiceError as exc:
        await close(websocket, CLOSE_BROKEN, exc.detail)
    except Exception:
        log.exception("shell attach of %s/%s broke", sandbox_id, shell_id)
        await close(websocket, CLOSE_BROKEN, "internal error")
    finally:
        await shell.detach()
