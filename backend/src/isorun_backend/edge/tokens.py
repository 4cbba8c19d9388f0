"""Signed URL tokens: who may reach which port of which sandbox, until when.

```
token   = "{tenant_id}.{expires_at}.{scope}.{mac}"       scope: pub | prv
mac     = base64url(HMAC-SHA256(secret, lines of: "isorun-url-v1", sandbox_id, port,
                                                  "{tenant_id}.{expires_at}.{scope}"))
```

The sandbox and port are not in the token but in the host name it is presented on, and the MAC
covers them: a token moved to another sandbox's or port's host does not verify. ``pub``: the
token alone lets a request in; ``prv``: the request must also carry an API key of the tenant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

_DOMAIN = b"isorun-url-v1"
_SCOPES = {"pub": True, "prv": False}


class TokenRefused(Exception):
    """The token is missing, malformed, forged, for another host, or expired."""


@dataclass(frozen=True, slots=True)
class Grant:
    tenant_id: str
    sandbox_id: str
    port: int
    expires_at: int  # Unix seconds
    public: bool


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the URL signing secret must have at least 32 bytes")
        self._secret = secret

    def sign(self, grant: Grant) -> str:
        body = f"{grant.tenant_id}.{grant.expires_at}.{'pub' if grant.public else 'prv'}"
        return f"{body}.{self._mac(grant.sandbox_id, grant.port, body)}"

    def verify(self, token: str, sandbox_id: str, port: int, now: float) -> Grant:
        """The grant ``token`` carries for ``sandbox_id``'s ``port``.

        Raises:
            TokenRefused: with a reason fit to show the caller.
        """
        parts = token.split(".")
        if len(parts) != 4 or parts[2] not in _SCOPES or not parts[1].isdigit():
            raise TokenRefused("the URL's token is malformed")
        tenant_id, expires, scope, mac = parts
        body = f"{tenant_id}.{expires}.{scope}"
        if not hmac.compare_digest(mac, self._mac(sandbox_id, port, body)):
            raise TokenRefused("the URL's token is not valid for this sandbox and port")
        if int(expires) <= now:
            raise TokenRefused("the URL has expired; ask for a new one (sb.url(port))")
        return Grant(tenant_id, sandbox_id, port, int(expires), _SCOPES[scope])

    def _mac(self, sandbox_id: str, port: int, body: str) -> str:
        message = b"\n".join((_DOMAIN, sandbox_id.encode(), str(port).encode(), body.encode()))
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
