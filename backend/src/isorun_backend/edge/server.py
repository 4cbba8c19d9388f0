"""Serving the edge with hypercorn: TLS with HTTP/2 and HTTP/1.1 on TCP, HTTP/3 on UDP.

Both listen on url_listen's port; responses advertise HTTP/3 with Alt-Svc, so a client that
speaks it moves over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config
from hypercorn.utils import wrap_app

from isorun_backend.core.config import BackendSettings
from isorun_backend.edge.app import EdgeApp
from isorun_backend.edge.certs import self_signed
from isorun_backend.services import Services

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def edge_serving(services: Services, settings: BackendSettings) -> AsyncIterator[None]:
    """Serve ``services``' sandboxes' URLs on ``settings.url_listen`` for the block.

    Raises:
        OSError: the address cannot be bound.
    """
    assert settings.url_listen is not None and services.urls.addresses is not None
    if settings.url_cert_file is not None and settings.url_key_file is not None:
        certfile, keyfile = settings.url_cert_file, settings.url_key_file
    else:
        certfile, keyfile = await asyncio.to_thread(
            self_signed, settings.data_dir / "edge", settings.url_domain
        )
    config = Config()
    config.bind = [settings.url_listen]
    config.quic_bind = [settings.url_listen]
    config.certfile = str(certfile)
    config.keyfile = str(keyfile)
    config.accesslog = None
    config.errorlog = log
    # The proxied answer streams (SSE, downloads); no timeout may cut a quiet one.
    config.keep_alive_timeout = 75
    # At shutdown hypercorn waits this long for its server tasks, and the QUIC one only ends
    # by it: the default 3 s would be added to every stop. The VMs go away with the backend
    # anyway, so a request still streaming from one has no more to give.
    config.graceful_timeout = 0.5
    # Bound here, so that an address in use fails the start instead of a background task.
    sockets = config.create_sockets()
    # Listening now, so that a client that connects before the server task runs is queued by
    # the kernel instead of refused (UDP datagrams wait in the socket's buffer anyway).
    for sock in sockets.secure_sockets:
        sock.listen(config.backlog)
    stopping = asyncio.Event()
    edge = EdgeApp(services, services.urls.signer, services.urls.addresses)
    # hypercorn types the app with its own TypedDicts; EdgeApp is typed as starlette's ASGI.
    app = wrap_app(edge, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    serving = asyncio.create_task(
        worker_serve(app, config, sockets=sockets, shutdown_trigger=stopping.wait)
    )
    log.info("URL edge on %s for *.%s", settings.url_listen, settings.url_domain)
    try:
        yield
    finally:
        stopping.set()
        # hypercorn leaves its QUIC transport open and registered with the loop. Its socket is
        # not closed here: closing a descriptor behind a registered transport leaves it in the
        # selector's map, and the next socket given that number is never polled. So one UDP
        # socket stays open per edge start, until the process ends.
        await serving
