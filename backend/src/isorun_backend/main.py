"""The backend application: ``create_app(settings)`` wires the API to the services.

```
lifespan   Services.open(settings): DB migrations, embedded hostd, TTL reaper ... all closed;
           the URL edge (edge/) on its own port when ISORUN_URL_LISTEN is set
app        RequestIdMiddleware ─► routes (/v1/...) ─► services;  api.errors: every error answer
docs       /v1/openapi.json, operationIds "{tag}-{name}" (the SDK's method names)
```

Run: ``uvicorn --factory isorun_backend.main:app_from_env``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from isorun_backend.api import errors
from isorun_backend.api.middleware import RequestIdMiddleware
from isorun_backend.api.routes import router
from isorun_backend.core.config import BackendSettings
from isorun_backend.edge.server import edge_serving
from isorun_backend.services import Services
from isorun_backend.services.health import VERSION


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}"


def create_app(settings: BackendSettings) -> FastAPI:
    """The API over one process's services, which start and stop with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Services.open(settings) as services:
            app.state.services = services
            if settings.url_listen is None:
                yield
                return
            async with edge_serving(services, settings):
                yield

    app = FastAPI(
        title="isorun",
        version=VERSION,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.add_middleware(RequestIdMiddleware)
    errors.install(app)
    app.include_router(router)
    return app


def app_from_env() -> FastAPI:
    """The app configured from the environment (``ISORUN_*``)."""
    return create_app(BackendSettings())
