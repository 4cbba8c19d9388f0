"""Typed dependencies: the caller's principal and the services, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from isorun_backend.core.security import Principal
from isorun_backend.services import Services
from isorun_backend.services.api_keys import authenticate
from isorun_backend.services.audit import AuditService
from isorun_backend.services.errors import Unauthorized
from isorun_backend.services.exec import ExecService
from isorun_backend.services.files import FileService
from isorun_backend.services.health import HealthService
from isorun_backend.services.processes import ProcessService
from isorun_backend.services.sandboxes import SandboxService
from isorun_backend.services.shells import ShellService
from isorun_backend.services.snapshots import SnapshotService
from isorun_backend.services.urls import UrlService
from isorun_backend.services.usage import UsageService

# auto_error off: a missing header must be our 401 problem, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="an isorun API key: isr_...")
_MISSING_KEY = "missing API key: send Authorization: Bearer isr_..."


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized(_MISSING_KEY)
    return await authenticate(services.db, credentials.credentials)


async def websocket_principal(websocket: WebSocket) -> Principal:
    """get_principal for a WebSocket, which the HTTP bearer dependency cannot read.

    Raises: Unauthorized.
    """
    services: Services = websocket.app.state.services
    scheme, key = get_authorization_scheme_param(websocket.headers.get("Authorization"))
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized(_MISSING_KEY)
    return await authenticate(services.db, key)


def _health(services: ServicesDep) -> HealthService:
    return services.health


def _sandboxes(services: ServicesDep) -> SandboxService:
    return services.sandboxes


def _snapshots(services: ServicesDep) -> SnapshotService:
    return services.snapshots


def _exec(services: ServicesDep) -> ExecService:
    return services.exec


def _processes(services: ServicesDep) -> ProcessService:
    return services.processes


def _shells(services: ServicesDep) -> ShellService:
    return services.shells


def _files(services: ServicesDep) -> FileService:
    return services.files


def _usage(services: ServicesDep) -> UsageService:
    return services.usage


def _audit(services: ServicesDep) -> AuditService:
    return services.audit


def _urls(services: ServicesDep) -> UrlService:
    return services.urls


PrincipalDep = Annotated[Principal, Depends(get_principal)]
HealthDep = Annotated[HealthService, Depends(_health)]
SandboxesDep = Annotated[SandboxService, Depends(_sandboxes)]
SnapshotsDep = Annotated[SnapshotService, Depends(_snapshots)]
ExecDep = Annotated[ExecService, Depends(_exec)]
ProcessesDep = Annotated[ProcessService, Depends(_processes)]
ShellsDep = Annotated[ShellService, Depends(_shells)]
FilesDep = Annotated[FileService, Depends(_files)]
UsageDep = Annotated[UsageService, Depends(_usage)]
AuditDep = Annotated[AuditService, Depends(_audit)]
UrlsDep = Annotated[UrlService, Depends(_urls)]
