"""Which secret a guest request is for, and the request the gateway sends upstream instead.

The guest never holds a secret's value: it gets a placeholder in ``name`` and, when asked, a
base URL on the gateway in ``base_url_env``. Two ways reach an upstream with the real header:

    explicit      http://10.0.0.1/s/<NAME><rest>   ->  <upstream base><rest>   (any method)
                  e.g. /s/OPENAI_API_KEY/models     ->  https://api.openai.com/v1/models
    transparent   https://<upstream host><path>, TLS terminated by the gateway with the isorun
                  CA: a path under the upstream's base path gets the header; any other path
                  on that host goes through untouched (still verified TLS, still that host)

In both, the guest's own ``Authorization`` and the secret's header are dropped before the real
one is added, and hop-by-hop headers go (so WebSocket upgrades do not pass this way). A path
with a ``.`` or ``..`` segment, raw or percent-encoded, is refused rather than normalized: an
upstream that resolves it differently would receive the header for a path outside its base.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from isorun_hostd.net.spec import HOST_ADDRESS, SECRET_NAME_PATTERN, NetworkSpec, SecretSpec

PLACEHOLDER_PREFIX = "isorun-placeholder-"
ROUTE_PREFIX = "/s/"
HTTPS_PORT = 443
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FIELD_BREAK = re.compile(rb"[\x00\r\n]")
# RFC 9110 §7.6.1, plus the proxy ones and Expect (the gateway answers 100-continue itself).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"host",
    }
)

Headers = list[tuple[bytes, bytes]]


class RouteError(Exception):
    """{reason} (HTTP {status})"""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{reason} (HTTP {status})")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """Where one guest request goes: ``secret`` is None for a transparent pass-through.

    ``target`` is the path with its query; ``path`` is without it (what the audit records).
    """

    secret: SecretSpec | None
    host: str
    port: int
    target: str

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def host_header(self) -> str:
        return self.host if self.port == HTTPS_PORT else f"{self.host}:{self.port}"


def placeholder(secret: SecretSpec) -> str:
    """The value the guest sees in place of ``secret``'s: useless anywhere but the gateway."""
    return f"{PLACEHOLDER_PREFIX}{secret.name}"


def guest_env(network: NetworkSpec, proxy_address: str = HOST_ADDRESS) -> dict[str, str]:
    """The environment a guest gets for ``network``'s secrets.

    Example: ``OPENAI_API_KEY=isorun-placeholder-OPENAI_API_KEY`` and
    ``OPENAI_BASE_URL=http://10.0.0.1/s/OPENAI_API_KEY``.
    """
    env: dict[str, str] = {}
    for secret in network.secrets:
        env[secret.name] = placeholder(secret)
        if secret.base_url_env:
            env[secret.base_url_env] = f"http://{proxy_address}{ROUTE_PREFIX}{secret.name}"
    return env


def route_explicit(secrets: Sequence[SecretSpec], target: str) -> UpstreamRequest:
    """The upstream request for a guest request to the gateway itself at ``target``.

    Raises:
        RouteError: 404 when the target is not ``/s/<NAME>[/...]`` of one of ``secrets``;
            400 when it has a dot segment, a control character or a fragment.
    """
    path, query = _split_target(target)
    if not path.startswith(ROUTE_PREFIX):
        raise RouteError(404, f"the gateway serves only {ROUTE_PREFIX}<SECRET_NAME>/...")
    name, slash, rest = path[len(ROUTE_PREFIX) :].partition("/")
    secret = next((s for s in secrets if s.name == name), None)
    if secret is None:
        shown = name if _SECRET_NAME.match(name) else "(not a secret name)"
        raise RouteError(404, f"this sandbox has no secret {shown}")
    base = _base_path(secret)
    upstream_path = f"{base}{slash}{rest}" or "/"
    return UpstreamRequest(secret, _host(secret), _port(secret), upstream_path + query)


def secrets_for_host(secrets: Iterable[SecretSpec], host: str) -> tuple[SecretSpec, ...]:
    """The secrets bound to ``host`` on port 443: the names transparent mode intercepts."""
    return tuple(s for s in secrets if _host(s) == host and _port(s) == HTTPS_PORT)


def route_transparent(secrets: Sequence[SecretSpec], host: str, target: str) -> UpstreamRequest:
    """The upstream request for a guest request to ``host`` inside intercepted TLS.

    The secret whose base path is the longest prefix of the path is injected; none matching
    means a pass-through with ``secret=None``.

    Raises:
        RouteError: 400 when the target is not origin-form or has a dot segment, a control
            character or a fragment.
    """
    path, query = _split_target(target)
    best: SecretSpec | None = None
    for secret in secrets_for_host(secrets, host):
        base = _base_path(secret)
        if (path == base or path.startswith(f"{base}/")) and (
            best is None or len(base) > len(_base_path(best))
        ):
            best = secret
    return UpstreamRequest(best, host, HTTPS_PORT, path + query)


def upstream_headers(guest: Headers, secret: SecretSpec | None, host_header: str) -> Headers:
    """``guest``'s request headers as the upstream gets them.

    Hop-by-hop headers (and those the guest's ``Connection`` names) are dropped and ``Host`` is
    set to the upstream's. With a ``secret``, the guest's ``Authorization`` and the secret's
    header are dropped too and the secret's real header added.

    Raises:
        RouteError: 502 when the secret's value would break the header (CR, LF or NUL).
    """
    headers = without_hop_by_hop(guest)
    if secret is not None:
        name = secret.header_name.encode()
        value = secret.header_value().encode()
        if _FIELD_BREAK.search(value):
            raise RouteError(502, f"the value of secret {secret.name} is no valid header value")
        drop = {b"authorization", name.lower()}
        headers = [(k, v) for k, v in headers if k.lower() not in drop]
        headers.append((name, value))
    return [(b"host", host_header.encode()), *headers]


def without_hop_by_hop(headers: Headers) -> Headers:
    """``headers`` without the hop-by-hop ones a proxy must not forward (RFC 9110 §7.6.1)."""
    named = {
        token.strip().lower()
        for key, value in headers
        if key.lower() == b"connection"
        for token in value.split(b",")
    }
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() not in named]


def inject_audit_fields(request: UpstreamRequest, method: str) -> dict[str, object]:
    """What ``credential.inject`` records: never the value, never the query string."""
    assert request.secret is not None
    return {
        "secret": request.secret.name,
        "host": request.host,
        "method": method,
        "path": request.path,
    }


def _split_target(target: str) -> tuple[str, str]:
    """(path, "?query" or "") of an origin-form target, refusing what could escape a base."""
    if not target.startswith("/"):
        raise RouteError(400, "the request target must be a path (origin-form)")
    if "#" in target:
        raise RouteError(400, "the request target must not carry a fragment")
    path, mark, query = target.partition("?")
    if "%" not in path and "\\" not in path:
        # Nothing encoded: the same checks on the raw segments (the common case, cheaper).
        if _CONTROL.search(path):
            raise RouteError(400, "the path must not contain control characters")
        if any(segment in {".", ".."} for segment in path.split("/")):
            raise RouteError(400, "the path must not contain '.' or '..' segments")
        return path, mark + query
    for segment in path.split("/"):
        decoded = unquote(segment)
        if _CONTROL.search(decoded):
            raise RouteError(400, "the path must not contain control characters")
        if any(part in {".", ".."} for part in re.split(r"[/\\]", decoded)):
            raise RouteError(400, "the path must not contain '.' or '..' segments")
    return path, mark + query


def _base_path(secret: SecretSpec) -> str:
    return (secret.upstream.path or "/").rstrip("/")


def _host(secret: SecretSpec) -> str:
    assert secret.upstream.host is not None  # an https URL always has one
    return secret.upstream.host.lower()


def _port(secret: SecretSpec) -> int:
    return secret.upstream.port or HTTPS_PORT
