"""Registry authentication: challenge parsing, Basic, and the Bearer token flow.

The distribution token flow (docs: distribution/docs/spec/auth/token.md):

```
GET /v2/<repo>/manifests/<ref>          -> 401  WWW-Authenticate: Bearer realm="R",service="S",
                                                 scope="repository:<repo>:pull"
GET R?service=S&scope=repository:<repo>:pull    (Basic credentials if configured, else anonymous)
                                        -> 200  {"token": "...", "expires_in": 300}
GET /v2/<repo>/manifests/<ref>          Authorization: Bearer <token>   -> 200
```

A registry that answers `WWW-Authenticate: Basic ...` gets the configured credentials on the
retry, and on every later request to that host without waiting for another 401.

One `RegistryAuth` lives per registry host for the whole `ImageStore`, so tokens are reused across
pulls. Tokens are cached per scope until shortly before `expires_in` runs out. The token request
goes through the same HTTP client as the registry calls, so the plain-HTTP policy applies to the
realm too (a realm on a plain-HTTP public host is refused before it is contacted). The token
answer is streamed and read raw under MAX_TOKEN_RESPONSE_BYTES (1 MiB) as it arrives; a
content-encoded one is refused (`bodies.read_capped`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass, field

import httpx

from isorun_hostd.images.bodies import read_capped
from isorun_hostd.images.errors import (
    AuthenticationFailed,
    RegistryProtocolError,
    RegistryUnreachable,
)

DEFAULT_TOKEN_TTL_S = 60.0
TOKEN_REFRESH_MARGIN_S = 10.0
MAX_TOKEN_RESPONSE_BYTES = 1 << 20

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PARAM = re.compile(r"""([!#$%&'*+\-.^_`|~0-9A-Za-z]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^\s,"]+)""")
_SEPARATORS = " \t,"


@dataclass(frozen=True)
class RegistryCredentials:
    """Username and password (or token) for one registry host."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header (RFC 9110 section 11.6.1)."""

    scheme: str
    params: dict[str, str]


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Split a `WWW-Authenticate` value into challenges; scheme lower-cased, params unquoted."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        while pos < len(header) and header[pos] in _SEPARATORS:
            pos += 1
        scheme = _TOKEN.match(header, pos)
        if scheme is None:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        while True:
            probe = pos
            while probe < len(header) and header[probe] in _SEPARATORS:
                probe += 1
            param = _PARAM.match(header, probe)
            if param is None:
                break
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
        challenges.append(Challenge(scheme=scheme.group(0).lower(), params=params))
    return challenges


@dataclass
class _Token:
    value: str
    expires_at: float


class RegistryAuth:
    """Credentials and cached tokens for one registry host.

    Args:
        registry: Registry name as in references, for messages.
        credentials: Used for Basic and for the token request; None pulls anonymously.
    """

    def __init__(self, registry: str, credentials: RegistryCredentials | None) -> None:
        self.registry = registry
        self.credentials = credentials
        self._basic = False
        self._tokens: dict[str, _Token] = {}
        # One token request at a time per host: concurrent pulls of one repository share it.
        self._lock = asyncio.Lock()

    def header(self, scope: str) -> str | None:
        """The Authorization value to send up front for `scope`, if one is known."""
        if self._basic and self.credentials is not None:
            return self.credentials.basic_header()
        token = self._tokens.get(scope)
        if token is not None and token.expires_at > time.monotonic():
            return f"Bearer {token.value}"
        return None

    async def authenticate(
        self, client: httpx.AsyncClient, response: httpx.Response, scope: str, reference: str
    ) -> str:
        """Answer the 401 `response` and return the Authorization value to retry with.

        Raises:
            AuthenticationFailed: No usable challenge, no credentials for Basic, or the token
                server refused the credentials.
            RegistryUnreachable: The token server could not be reached.
            RegistryProtocolError: The token server's answer has no token.
        """
        challenges = parse_www_authenticate(response.headers.get("www-authenticate", ""))
        by_scheme = {challenge.scheme: challenge for challenge in challenges}
        if "bearer" in by_scheme:
            return await self._bearer(client, by_scheme["bearer"], scope, reference)
        if "basic" in by_scheme:
            if self.credentials is None:
                raise AuthenticationFailed(
                    reference, registry=self.registry, detail="credentials required (Basic auth)"
                )
            self._basic = True
            return self.credentials.basic_header()
        raise AuthenticationFailed(
            reference,
            registry=self.registry,
            detail=f"401 without a usable challenge ({response.headers.get('www-authenticate')!r})",
        )

    async def _bearer(
        self, client: httpx.AsyncClient, challenge: Challenge, scope: str, reference: str
    ) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthenticationFailed(
                reference, registry=self.registry, detail="Bearer challenge without a realm"
            )
        async with self._lock:
            cached = self._tokens.get(scope)
            if cached is not None and cached.expires_at > time.monotonic():
                return f"Bearer {cached.value}"
            params = {"scope": challenge.params.get("scope", scope)}
            if "service" in challenge.params:
                params["service"] = challenge.params["service"]
            headers = {}
            if self.credentials is not None:
                headers["Authorization"] = self.credentials.basic_header()
            request = client.build_request("GET", realm, params=params, headers=headers)
            try:
                answer = await client.send(request, stream=True)
            except httpx.RequestError as exc:
                raise RegistryUnreachable(
                    reference, registry=self.registry, detail=f"token server {realm}: {exc!r}"
                ) from exc
            try:
                if answer.status_code in (401, 403):
                    who = "the configured credentials" if self.credentials else "anonymous access"
                    raise AuthenticationFailed(
                        reference,
                        registry=self.registry,
                        detail=f"token server {realm} refused {who} ({answer.status_code})",
                    )
                if answer.status_code != 200:
                    raise RegistryProtocolError(
                        reference,
                        registry=self.registry,
                        detail=f"token server {realm} answered {answer.status_code}",
                    )
                body = await read_capped(
                    answer,
                    reference=reference,
                    registry=self.registry,
                    what=f"token response from {realm}",
                    limit=MAX_TOKEN_RESPONSE_BYTES,
                )
            finally:
                await answer.aclose()
            token = _parse_token(body, reference, self.registry, realm)
            self._tokens[scope] = token
            return f"Bearer {token.value}"


def _parse_token(answer: bytes, reference: str, registry: str, realm: str) -> _Token:
    try:
        body = json.loads(answer)
        value = body.get("token") or body.get("access_token")
        ttl = float(body.get("expires_in") or DEFAULT_TOKEN_TTL_S)
    except (ValueError, AttributeError, TypeError) as exc:
        raise RegistryProtocolError(
            reference, registry=registry, detail=f"token server {realm} sent no JSON token"
        ) from exc
    if not isinstance(value, str) or not value:
        raise RegistryProtocolError(
            reference, registry=registry, detail=f"token server {realm} sent no token"
        )
    expires_at = time.monotonic() + max(ttl - TOKEN_REFRESH_MARGIN_S, 0.0)
    return _Token(value=value, expires_at=expires_at)
