"""The edge: an ASGI app that serves ``https://{port}-{sandbox}.{domain}/...`` from the guest.

```
Host ─► PortAddress ─► token (?isorun_token=, X-Isorun-Token, or the cookie it set) verified
     ─► private URL: X-Isorun-Key must be an API key of the token's tenant
     ─► services.sandboxes.running (a hibernated sandbox is resumed) ─► counted
     ─► node.connect_port ─► http_proxy (any method, streaming) or ws_proxy (WebSocket)
```

Refusals are the edge's own pages (pages.py): 401/403 for the token or key, 404 for a sandbox
that is not there, 410 for one that stopped, 502 when nothing listens on the port, 503 when the
sandbox cannot be reached or woken. The token, the key and the token cookie never reach the
guest.
"""

from __future__ import annotations

import logging
import time
import urllib.parse

from isorun_hostd.agent_channel import AgentError, ChannelClosed
from starlette.types import Message, Receive, Scope, Send

from isorun_backend.core.security import Principal
from isorun_backend.edge import http_proxy, ws_proxy
from isorun_backend.edge.addresses import TOKEN_PARAM, Addresses, PortAddress
from isorun_backend.edge.pages import Headers, Refusal, send_refusal
from isorun_backend.edge.tokens import Grant, TokenRefused, UrlSigner
from isorun_backend.nodes import NodePort
from isorun_backend.services import Services
from isorun_backend.services.api_keys import authenticate
from isorun_backend.services.errors import (
    SandboxNotFound,
    SandboxNotRunning,
    ServiceError,
    Unauthorized,
)

log = logging.getLogger(__name__)

TOKEN_HEADER = b"x-isorun-token"
KEY_HEADER = b"x-isorun-key"
# Our own headers and cookie; what the guest sees never holds them.
_OURS = frozenset({TOKEN_HEADER, KEY_HEADER})
_COOKIE_PREFIX = TOKEN_PARAM.encode() + b"="


class EdgeApp:
    def __init__(self, services: Services, signer: UrlSigner, addresses: Addresses) -> None:
        self._services = services
        self._signer = signer
        self._addresses = addresses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        websocket = scope["type"] == "websocket"
        headers: Headers = list(scope["headers"])
        accept = _header(headers, b"accept").decode("latin-1")
        try:
            address = self._address(headers)
            grant, token_from_query = self._grant(scope, headers, address)
            await self._check_key(grant, headers)
            port = await self._connect(grant)
        except Refusal as refusal:
            await send_refusal(send, refusal, accept, websocket=websocket)
            return
        forwarded = _forwarded(scope, headers)
        if token_from_query:
            scope = {**scope, "query_string": _without_token(scope["query_string"])}
            send = _setting_cookie(send, token_from_query, grant.expires_at)
        try:
            with self._services.sandboxes.attached(grant.sandbox_id):
                proxy = ws_proxy.forward if websocket else http_proxy.forward
                await proxy(scope, receive, send, port, forwarded)
        except Refusal as refusal:
            await send_refusal(send, refusal, accept, websocket=websocket)
        except (AgentError, ChannelClosed) as exc:
            # Mid-answer: the client sees its connection end; nothing else can be said.
            log.info("URL %s: the guest connection broke: %s", address, exc)
        finally:
            await port.aclose()

    def _address(self, headers: Headers) -> PortAddress:
        host = _header(headers, b"host").decode("latin-1")
        address = self._addresses.parse(host)
        if address is None:
            raise Refusal(
                404,
                "No sandbox here",
                f"{host!r} is not a sandbox URL; they look like "
                f"https://PORT-SANDBOX.{self._addresses.domain} (ask for one with sb.url(port)).",
            )
        return address

    def _grant(self, scope: Scope, headers: Headers, address: PortAddress) -> tuple[Grant, str]:
        """The token's grant, and the token when it came in the query (to be made a cookie)."""
        query = urllib.parse.parse_qs(scope["query_string"].decode("latin-1"))
        from_query = query.get(TOKEN_PARAM, [""])[-1]
        token = from_query or _header(headers, TOKEN_HEADER).decode("latin-1") or _cookie(headers)
        if not token:
            raise Refusal(
                401,
                "Sign-in needed",
                "This sandbox URL needs its token: open the whole URL that sb.url(port) gave, "
                "or send the token in X-Isorun-Token.",
            )
        try:
            grant = self._signer.verify(token, address.sandbox_id, address.port, time.time())
        except TokenRefused as exc:
            raise Refusal(401, "Sign-in needed", str(exc)) from exc
        return grant, from_query

    async def _check_key(self, grant: Grant, headers: Headers) -> None:
        if grant.public:
            return
        key = _header(headers, KEY_HEADER).decode("latin-1")
        if not key:
            raise Refusal(
                401,
                "API key needed",
                "This is a private sandbox URL: send an API key of its tenant in X-Isorun-Key.",
            )
        try:
            principal = await authenticate(self._services.db, key)
        except Unauthorized as exc:
            raise Refusal(401, "API key needed", exc.detail) from exc
        if principal.tenant_id != grant.tenant_id:
            raise Refusal(403, "Not yours", "The API key belongs to another tenant.")

    async def _connect(self, grant: Grant) -> NodePort:
        sandboxes = self._services.sandboxes
        principal = Principal(tenant_id=grant.tenant_id, key_id="url")
        try:
            running = await sandboxes.running(principal, grant.sandbox_id)
        except SandboxNotFound as exc:
            raise Refusal(404, "No such sandbox", exc.detail) from exc
        except SandboxNotRunning as exc:
            raise Refusal(410, "Sandbox stopped", exc.detail) from exc
        except ServiceError as exc:
            raise Refusal(503, "Sandbox unavailable", exc.detail) from exc
        self._services.urls.count(grant.sandbox_id)
        try:
            return await running.node.connect_port(grant.sandbox_id, grant.port)
        except AgentError as exc:
            if exc.code == "refused":
                raise Refusal(
                    502,
                    "Nothing listens on this port",
                    f"Nothing accepts connections on port {grant.port} in sandbox "
                    f"{grant.sandbox_id}. Start a server there that listens on 127.0.0.1 or "
                    f"0.0.0.0, port {grant.port}.",
                ) from exc
            raise Refusal(502, "Bad gateway", f"port {grant.port}: {exc}") from exc
        except (ChannelClosed, ServiceError) as exc:
            raise Refusal(503, "Sandbox unavailable", str(exc)) from exc


async def _lifespan(receive: Receive, send: Send) -> None:
    # The services start and stop with the API app; the edge only says it is ready.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _header(headers: Headers, name: bytes) -> bytes:
    return next((value for key, value in headers if key == name), b"")


def _cookie(headers: Headers) -> str:
    for name, value in headers:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, token = part.strip().partition("=")
                if key == TOKEN_PARAM:
                    return token
    return ""


def _forwarded(scope: Scope, headers: Headers) -> Headers:
    """The request's headers as the guest gets them: without ours, hop-by-hop ones or the
    token cookie, with X-Forwarded-*."""
    kept: Headers = []
    for name, value in headers:
        if name in _OURS or name in http_proxy.HOP_BY_HOP or name.startswith(b"x-forwarded-"):
            continue
        if name == b"cookie":
            parts = [p for p in value.split(b";") if not p.strip().startswith(_COOKIE_PREFIX)]
            if parts:
                kept.append((name, b";".join(parts).strip()))
            continue
        kept.append((name, value))
    client = scope.get("client")
    if client:
        kept.append((b"x-forwarded-for", client[0].encode()))
    kept.append((b"x-forwarded-proto", b"https"))
    kept.append((b"x-forwarded-host", _header(headers, b"host")))
    return kept


def _without_token(query_string: bytes) -> bytes:
    # Split, not parsed and encoded again: the guest gets the other parameters byte for byte.
    prefix = TOKEN_PARAM.encode() + b"="
    return b"&".join(p for p in query_string.split(b"&") if not p.startswith(prefix))


def _setting_cookie(send: Send, token: str, expires_at: int) -> Send:
    """``send``, with the token made a cookie of this host on the response, so that the page's
    own requests (scripts, fetches, sockets) pass without it in their URLs."""
    max_age = max(0, expires_at - int(time.time()))
    cookie = f"{TOKEN_PARAM}={token}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax"

    async def sending(message: Message) -> None:
        if message["type"] in ("http.response.start", "websocket.accept"):
            headers = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            message = {**message, "headers": headers}
        await send(message)

    return sending
