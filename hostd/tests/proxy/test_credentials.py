"""Route matching and header rewriting: which secret, which upstream URL, which headers."""

from __future__ import annotations

import pytest
from isorun_hostd.net.spec import NetworkSpec, SecretSpec
from isorun_hostd.proxy.credentials import (
    RouteError,
    guest_env,
    inject_audit_fields,
    placeholder,
    route_explicit,
    route_transparent,
    secrets_for_host,
    upstream_headers,
)

OPENAI = SecretSpec(
    name="OPENAI_API_KEY",
    value="sk-real",
    upstream="https://api.openai.com/v1",
    base_url_env="OPENAI_BASE_URL",
)
ANTHROPIC = SecretSpec(
    name="ANTHROPIC_API_KEY",
    value="ant-real",
    upstream="https://api.anthropic.com",
    header="x-api-key: {value}",
)
SECRETS = (OPENAI, ANTHROPIC)


def test_the_guest_gets_placeholders_and_gateway_urls() -> None:
    env = guest_env(NetworkSpec(secrets=SECRETS))
    assert env == {
        "OPENAI_API_KEY": "isorun-placeholder-OPENAI_API_KEY",
        "OPENAI_BASE_URL": "http://10.0.0.1/s/OPENAI_API_KEY",
        "ANTHROPIC_API_KEY": "isorun-placeholder-ANTHROPIC_API_KEY",
    }
    assert "sk-real" not in repr(env)
    assert placeholder(OPENAI) == env["OPENAI_API_KEY"]


@pytest.mark.parametrize(
    ("target", "url"),
    [
        ("/s/OPENAI_API_KEY", "api.openai.com/v1"),
        ("/s/OPENAI_API_KEY/", "api.openai.com/v1/"),
        ("/s/OPENAI_API_KEY/models", "api.openai.com/v1/models"),
        ("/s/OPENAI_API_KEY/models?limit=2&a=%2F", "api.openai.com/v1/models?limit=2&a=%2F"),
        ("/s/ANTHROPIC_API_KEY", "api.anthropic.com/"),
        ("/s/ANTHROPIC_API_KEY/v1/messages", "api.anthropic.com/v1/messages"),
        # An encoded slash inside a segment is data to some APIs (GitLab project paths).
        ("/s/OPENAI_API_KEY/files/a%2Fb", "api.openai.com/v1/files/a%2Fb"),
    ],
)
def test_explicit_routes_map_onto_the_upstream_base(target: str, url: str) -> None:
    request = route_explicit(SECRETS, target)
    assert f"{request.host_header}{request.target}" == url


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/", 404),
        ("/x/OPENAI_API_KEY/models", 404),
        ("/s/UNKNOWN/models", 404),
        ("/s/", 404),
        ("/s/OPENAI_API_KEY/../x", 400),
        ("/s/OPENAI_API_KEY/..", 400),
        ("/s/OPENAI_API_KEY/./models", 400),
        ("/s/OPENAI_API_KEY/%2e%2e/x", 400),
        ("/s/OPENAI_API_KEY/%2E%2e/x", 400),
        ("/s/OPENAI_API_KEY/..%2fadmin", 400),
        ("/s/OPENAI_API_KEY/..%5cadmin", 400),
        ("/s/../OPENAI_API_KEY/x", 400),
        ("/s/OPENAI_API_KEY/x%0d%0aHost:%20evil", 400),
        ("/s/OPENAI_API_KEY/x#frag", 400),
        ("http://api.openai.com/v1/models", 400),
        ("*", 400),
    ],
)
def test_explicit_refusals(target: str, status: int) -> None:
    with pytest.raises(RouteError) as refused:
        route_explicit(SECRETS, target)
    assert refused.value.status == status


def test_transparent_routes_inject_only_under_the_base_path() -> None:
    assert secrets_for_host(SECRETS, "api.openai.com") == (OPENAI,)
    assert secrets_for_host(SECRETS, "openai.com") == ()
    assert route_transparent(SECRETS, "api.openai.com", "/v1/models?x=1").secret is OPENAI
    assert route_transparent(SECRETS, "api.openai.com", "/v1").secret is OPENAI
    passthrough = route_transparent(SECRETS, "api.openai.com", "/v10/models")
    assert passthrough.secret is None
    assert passthrough.target == "/v10/models"
    assert route_transparent(SECRETS, "api.anthropic.com", "/anything").secret is ANTHROPIC
    with pytest.raises(RouteError):
        route_transparent(SECRETS, "api.openai.com", "/v1/../admin")


def test_the_longest_base_path_wins() -> None:
    narrow = SecretSpec(name="NARROW", value="n", upstream="https://api.openai.com/v1/files")
    secrets = (OPENAI, narrow)
    assert route_transparent(secrets, "api.openai.com", "/v1/files/1").secret is narrow
    assert route_transparent(secrets, "api.openai.com", "/v1/models").secret is OPENAI


def test_a_secret_on_another_port_is_not_intercepted() -> None:
    other = SecretSpec(name="OTHER", value="o", upstream="https://api.openai.com:8443/")
    assert secrets_for_host((other,), "api.openai.com") == ()
    assert route_explicit((other,), "/s/OTHER/x").host_header == "api.openai.com:8443"


def test_headers_drop_the_placeholder_and_hop_by_hop_and_add_the_real_one() -> None:
    guest = [
        (b"Host", b"10.0.0.1"),
        (b"Authorization", b"Bearer isorun-placeholder-ANTHROPIC_API_KEY"),
        (b"X-API-Key", b"isorun-placeholder-ANTHROPIC_API_KEY"),
        (b"Connection", b"keep-alive, X-Secret-Hop"),
        (b"X-Secret-Hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"websocket"),
        (b"Accept", b"*/*"),
    ]
    sent = upstream_headers(guest, ANTHROPIC, "api.anthropic.com")
    assert sent == [
        (b"host", b"api.anthropic.com"),
        (b"Accept", b"*/*"),
        (b"x-api-key", b"ant-real"),
    ]
    untouched = upstream_headers(guest[:2], None, "api.anthropic.com")
    assert untouched == [(b"host", b"api.anthropic.com"), guest[1]]


def test_audit_fields_never_hold_the_value_or_the_query() -> None:
    request = route_explicit(SECRETS, "/s/OPENAI_API_KEY/models?key=leak")
    fields = inject_audit_fields(request, "GET")
    assert fields == {
        "secret": "OPENAI_API_KEY",
        "host": "api.openai.com",
        "method": "GET",
        "path": "/v1/models",
    }
