"""Registry API v2 client for one pull: manifests by tag or digest, blobs into the store.

Transport policy, enforced in an httpx request hook so that it covers every request the pull
makes (registry calls, the token realm, and each redirect hop) before any connection is opened:

```
https://anything                               allowed (TLS verified)
http://localhost | 127.0.0.0/8 | [::1]         allowed when the registry itself is loopback
                                               (or configured insecure), else refused
http://<host> named in insecure_registries     allowed (operator opted in)
http://<anything else>                         InsecureRegistry, nothing sent
```

Every request asks for `Accept-Encoding: identity`, and no body is ever decoded by httpx (see
`bodies`): a content-encoded manifest or token answer is refused, and the caps count bytes as
they come off the wire. Manifests (distribution docs/spec/api.md, "Pulling an Image"): always
sent with the full Accept list, read with a 4 MiB cap, and `sha256(body)` must equal both the
digest asked for (when pulling by digest) and the `Docker-Content-Digest` header (when present).
Blobs are streamed raw (`aiter_raw`) into the `BlobStore`, capped at the descriptor's size and
verified there on the bytes as sent, whatever Content-Encoding claims.

httpx drops `Authorization` on cross-origin redirects, which is what blob redirects to a CDN
need. A 401 is answered (credentials, token request) only when it comes from the registry's own
origin (scheme, host, port): one from a redirect target would otherwise get the registry's
credentials sent to whatever realm it names. `trust_env=False` because hostd's settings, not
the environment, decide about proxies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import httpx

from isorun_hostd.images.auth import RegistryAuth
from isorun_hostd.images.blobs import MAX_DOCUMENT_BYTES, BlobStore
from isorun_hostd.images.bodies import REQUEST_HEADERS, read_capped
from isorun_hostd.images.errors import (
    AuthenticationFailed,
    BlobUnknown,
    ContentTooLarge,
    DigestMismatch,
    InsecureRegistry,
    ManifestUnknown,
    RegistryProtocolError,
    RegistryUnreachable,
)
from isorun_hostd.images.manifest import MANIFEST_ACCEPT, sha256_digest
from isorun_hostd.images.reference import Reference

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
MAX_REDIRECTS = 5
STREAM_CHUNK_BYTES = 1 << 20


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (brackets allowed); never resolves names."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _split_host_port(registry: str) -> tuple[str, int | None]:
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, sep, port = registry.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return registry, None


def plain_http_allowed(
    host: str, port: int | None, insecure: Collection[str], *, loopback: bool = True
) -> bool:
    """Plain HTTP to `host:port`: configured insecure, or loopback when `loopback` allows it."""
    if is_loopback(host):
        return loopback or _named(host, port, insecure)
    return _named(host, port, insecure)


def _named(host: str, port: int | None, insecure: Collection[str]) -> bool:
    named = {host} if port is None else {host, f"{host}:{port}"}
    bracketed = {f"[{host}]", f"[{host}]:{port}"} if ":" in host else set()
    return bool((named | bracketed) & set(insecure))


def registry_base_url(reference: Reference, insecure: Collection[str]) -> str:
    host, port = _split_host_port(reference.api_host)
    scheme = "http" if plain_http_allowed(host, port, insecure) else "https"
    return f"{scheme}://{reference.api_host}"


def transport_policy(
    text: str, insecure: Collection[str], registry: str
) -> Callable[[httpx.Request], Awaitable[None]]:
    """The request hook that refuses plain HTTP to public hosts before anything is sent.

    Plain HTTP to loopback is for loopback (or configured insecure) registries only: a public
    HTTPS registry must not be able to redirect hostd, or point its token realm, at a plain
    HTTP service on the host itself.
    """
    host, port = _split_host_port(registry)
    loopback = plain_http_allowed(host, port, insecure)

    async def check(request: httpx.Request) -> None:
        url = request.url
        if url.scheme == "http" and not plain_http_allowed(
            url.host, url.port, insecure, loopback=loopback
        ):
            detail = (
                f"loopback, but registry {registry} is not loopback or configured insecure"
                if is_loopback(url.host)
                else "not loopback, not configured insecure"
            )
            raise InsecureRegistry(
                text,
                registry=url.netloc.decode("ascii"),
                detail=detail,
                url=str(url.copy_with(query=None)),
            )

    return check


def new_http_client(
    text: str,
    insecure: Collection[str],
    transport: httpx.AsyncBaseTransport | None,
    registry: str,
) -> httpx.AsyncClient:
    """The client of one pull from `registry` (`host[:port]` as in the reference)."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        trust_env=False,
        headers=REQUEST_HEADERS,
        event_hooks={"request": [transport_policy(text, insecure, registry)]},
    )


@dataclass(frozen=True)
class FetchedManifest:
    media_type: str | None
    body: bytes
    digest: str


class RegistryClient:
    """The v2 API of one repository, for one pull.

    Args:
        reference: The parsed reference.
        text: The reference as the caller wrote it, for messages.
        http: The pull's client (built by `new_http_client`).
        auth: The registry host's auth state, shared across pulls.
        base_url: `scheme://host[:port]` from `registry_base_url`.
    """

    def __init__(
        self,
        reference: Reference,
        text: str,
        http: httpx.AsyncClient,
        auth: RegistryAuth,
        base_url: str,
    ) -> None:
        self.reference = reference
        self.text = text
        self.http = http
        self.auth = auth
        self.base = f"{base_url}/v2/{reference.repository}"
        self.scope = f"repository:{reference.repository}:pull"

    async def manifest(self, target: str) -> FetchedManifest:
        """GET a manifest or index by tag or digest and verify its digest.

        Raises:
            ManifestUnknown: 404 for `target`.
            DigestMismatch: The body's sha256 differs from `target` (a digest) or from the
                Docker-Content-Digest header.
            ContentTooLarge: More than 4 MiB.
            AuthenticationFailed, RegistryUnreachable, RegistryProtocolError, InsecureRegistry.
        """
        url = f"{self.base}/manifests/{target}"
        response = await self._send(url, {"Accept": MANIFEST_ACCEPT})
        try:
            if response.status_code == 404:
                raise ManifestUnknown(
                    self.text, registry=self.reference.registry, detail="404", target=target
                )
            self._check_status(response, url)
            body = await read_capped(
                response,
                reference=self.text,
                registry=self.reference.registry,
                what=f"manifest {target}",
                limit=MAX_DOCUMENT_BYTES,
            )
        finally:
            await response.aclose()
        digest = sha256_digest(body)
        if target.startswith("sha256:") and digest != target:
            raise DigestMismatch(self.text, what="manifest", expected=target, actual=digest)
        header = response.headers.get("docker-content-digest")
        if header is not None and header != digest:
            raise DigestMismatch(
                self.text, what="manifest (Docker-Content-Digest)", expected=header, actual=digest
            )
        return FetchedManifest(response.headers.get("content-type"), body, digest)

    async def blob(
        self,
        store: BlobStore,
        digest: str,
        size: int,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Path:
        """Stream a blob into `store`, verified against `digest` and `size`.

        Raises:
            BlobUnknown: 404.
            ContentTooLarge, DigestMismatch: From the store's checks.
            AuthenticationFailed, RegistryUnreachable, RegistryProtocolError, InsecureRegistry.
        """
        url = f"{self.base}/blobs/{digest}"
        response = await self._send(url, {})
        try:
            if response.status_code == 404:
                raise BlobUnknown(
                    self.text, registry=self.reference.registry, detail="404", digest=digest
                )
            self._check_status(response, url)
            length = response.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > size:
                raise ContentTooLarge(self.text, what=f"blob {digest}", limit_bytes=size)
            try:
                return await store.put_stream(
                    self.text,
                    digest,
                    size,
                    response.aiter_raw(STREAM_CHUNK_BYTES),
                    on_bytes,
                )
            except httpx.RequestError as exc:
                raise self._unreachable(exc) from exc
        finally:
            await response.aclose()

    async def _send(self, url: str, headers: dict[str, str]) -> httpx.Response:
        """Send a GET (streamed), answering one 401 with the auth flow."""
        retried = False
        while True:
            request_headers = dict(headers)
            authorization = self.auth.header(self.scope)
            if authorization is not None:
                request_headers["Authorization"] = authorization
            request = self.http.build_request("GET", url, headers=request_headers)
            try:
                response = await self.http.send(request, stream=True)
            except httpx.RequestError as exc:
                raise self._unreachable(exc) from exc
            if response.status_code != 401:
                return response
            await response.aclose()
            if _origin(response.url) != _origin(httpx.URL(url)):
                # A redirect target's challenge would get this registry's credentials sent to
                # whatever realm it names.
                raise AuthenticationFailed(
                    self.text,
                    registry=self.reference.registry,
                    detail=f"401 from {response.url.copy_with(query=None)} after a redirect "
                    "is not answered: credentials are only for the registry itself",
                )
            if retried:
                detail = (
                    "bad credentials (401 after authenticating)"
                    if self.auth.credentials
                    else "anonymous pull not allowed (401 after authenticating)"
                )
                raise AuthenticationFailed(
                    self.text, registry=self.reference.registry, detail=detail
                )
            await self.auth.authenticate(self.http, response, self.scope, self.text)
            retried = True

    def _check_status(self, response: httpx.Response, url: str) -> None:
        if response.status_code == 200:
            return
        if response.status_code == 403:
            raise AuthenticationFailed(
                self.text, registry=self.reference.registry, detail=f"403 Forbidden for {url}"
            )
        raise RegistryProtocolError(
            self.text,
            registry=self.reference.registry,
            detail=f"unexpected status {response.status_code} for {url}",
        )

    def _unreachable(self, exc: httpx.RequestError) -> RegistryUnreachable:
        return RegistryUnreachable(
            self.text, registry=self.reference.registry, detail=f"{type(exc).__name__}: {exc}"
        )
