"""Public URLs: signing them for a tenant's sandbox, and counting the requests they let in.

The edge (isorun_backend.edge) serves them; this service only needs the signer, the addresses
and the database, so that the API can give URLs whether or not this process is the edge. The
counts reach the sandbox rows within FLUSH_S, and at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from isorun_backend.core.config import BackendSettings
from isorun_backend.core.security import Principal
from isorun_backend.edge.addresses import TOKEN_PARAM, Addresses, PortAddress
from isorun_backend.edge.certs import write_atomically
from isorun_backend.edge.tokens import Grant, UrlSigner
from isorun_backend.models import SandboxRow, UrlCreate, UrlPublic
from isorun_backend.services.errors import Conflict, InvalidRequest
from isorun_backend.services.sandboxes import SandboxService
from isorun_backend.storage import Database

log = logging.getLogger(__name__)

SECRET_NAME = "url-secret"
FLUSH_S = 1.0


class UrlService:
    def __init__(self, settings: BackendSettings, db: Database, sandboxes: SandboxService) -> None:
        self._db = db
        self._sandboxes = sandboxes
        # Requests counted in memory and written in batches: a database write per proxied
        # request would cost every request a commit (2 ms on SQLite here) and load PostgreSQL
        # at scale.
        self._pending: Counter[str] = Counter()
        self._flusher: asyncio.Task[None] | None = None
        self._max_ttl_s = settings.url_max_ttl_s
        self.signer = UrlSigner(url_secret(settings))
        port = settings.url_port
        self.addresses = Addresses(settings.url_domain, port) if port is not None else None

    async def create(self, principal: Principal, sandbox_id: str, body: UrlCreate) -> UrlPublic:
        """A signed URL to ``body.port`` of the tenant's sandbox (running or hibernated).

        Raises:
            SandboxNotFound, Conflict (no edge configured), InvalidRequest (too long a life).
        """
        if self.addresses is None:
            raise Conflict(
                "this backend serves no public URLs: set ISORUN_URL_LISTEN "
                "(`isorun up` serves them on 127.0.0.1:8443)"
            )
        if body.expires_in_s > self._max_ttl_s:
            raise InvalidRequest(
                f"at most {self._max_ttl_s} s (ISORUN_URL_MAX_TTL_S)", field="expires_in_s"
            )
        await self._sandboxes.get(principal, sandbox_id)
        expires_at = int(time.time()) + body.expires_in_s
        grant = Grant(principal.tenant_id, sandbox_id, body.port, expires_at, body.public)
        token = self.signer.sign(grant)
        origin = self.addresses.origin(PortAddress(body.port, sandbox_id))
        return UrlPublic(
            url=f"{origin}/?{TOKEN_PARAM}={token}",
            origin=origin,
            token=token,
            port=body.port,
            public=body.public,
            expires_at=dt.datetime.fromtimestamp(expires_at, dt.UTC),
        )

    def count(self, sandbox_id: str) -> None:
        """One more request let in through the sandbox's URLs; written within FLUSH_S."""
        self._pending[sandbox_id] += 1
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_every())

    async def flush(self) -> None:
        """Write the counts gathered so far (one transaction); kept for the next flush if the
        database refuses."""
        pending, self._pending = self._pending, Counter()
        if not pending:
            return
        try:
            async with self._db.session() as session, session.begin():
                for sandbox_id, requests in pending.items():
                    await session.execute(
                        update(SandboxRow)
                        .where(SandboxRow.id == sandbox_id)
                        .values(url_requests=SandboxRow.url_requests + requests)
                    )
        except SQLAlchemyError:
            self._pending.update(pending)
            raise

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.flush()
            except SQLAlchemyError as exc:
                log.warning("URL request counts not written yet: %s", exc)


def url_secret(settings: BackendSettings) -> bytes:
    """The configured signing key, or the one made once in <data_dir>/edge."""
    if settings.url_secret is not None:
        return settings.url_secret.get_secret_value().encode()
    path: Path = settings.data_dir / "edge" / SECRET_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, secrets.token_bytes(32), 0o600)
    return path.read_bytes()
