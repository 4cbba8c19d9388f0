"""Dependencies of the node API: the node token check, the Runtime, a sandbox by id."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import HTTPConnection

from isorun_hostd.api.errors import Unauthorized, UnknownSandbox
from isorun_hostd.sandboxes import Runtime, Sandbox

_bearer = HTTPBearer(auto_error=False)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Raises: Unauthorized, unless the request carries this node's token."""
    check_token(request, credentials.credentials if credentials is not None else "")


def check_token(connection: HTTPConnection, given: str) -> None:
    """Raises: Unauthorized, unless ``given`` is this node's token."""
    token: bytes = connection.app.state.token
    # Constant time: the token is the only thing between the network and the VMs.
    if not hmac.compare_digest(given.encode(), token):
        raise Unauthorized("a node token is required: Authorization: Bearer <token>")


def get_sandbox(sandbox_id: str, runtime: RuntimeDep) -> Sandbox:
    """Raises: UnknownSandbox."""
    sandbox = runtime.get(sandbox_id)
    if sandbox is None:
        raise UnknownSandbox(sandbox_id)
    return sandbox


SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]


def websocket_sandbox(websocket: WebSocket, sandbox_id: str) -> Sandbox:
    """get_sandbox for a WebSocket, whose node token the HTTP bearer dependency cannot read.

    Raises: Unauthorized, UnknownSandbox.
    """
    scheme, token = get_authorization_scheme_param(websocket.headers.get("Authorization"))
    check_token(websocket, token if scheme.lower() == "bearer" else "")
    runtime: Runtime = websocket.app.state.runtime
    return get_sandbox(sandbox_id, runtime)
