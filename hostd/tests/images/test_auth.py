"""WWW-Authenticate parsing and the plain-HTTP policy (pure functions, no network)."""

from __future__ import annotations

import pytest
from isorun_hostd.images.auth import Challenge, RegistryCredentials, parse_www_authenticate
from isorun_hostd.images.registry import is_loopback, plain_http_allowed


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/python:pull"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/python:pull",
                    },
                )
            ],
        ),
        ('Basic realm="isorun-test"', [Challenge("basic", {"realm": "isorun-test"})]),
        (
            'Basic realm="a, b", Bearer realm="r",scope="x:y:pull,push"',
            [
                Challenge("basic", {"realm": "a, b"}),
                Challenge("bearer", {"realm": "r", "scope": "x:y:pull,push"}),
            ],
        ),
        (
            'Bearer realm="quo\\"ted", error=insufficient_scope',
            [Challenge("bearer", {"realm": 'quo"ted', "error": "insufficient_scope"})],
        ),
        ("Negotiate", [Challenge("negotiate", {})]),
        ("", []),
    ],
)
def test_parse_www_authenticate(header: str, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


def test_credentials_hide_password() -> None:
    credentials = RegistryCredentials("user", "s3cret")
    assert "s3cret" not in repr(credentials)
    assert credentials.basic_header() == "Basic dXNlcjpzM2NyZXQ="


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("203.0.113.1", False),
        ("localhost.example.com", False),
        ("registry-1.docker.io", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_plain_http_policy() -> None:
    assert plain_http_allowed("127.0.0.1", 5000, ())
    assert not plain_http_allowed("203.0.113.1", 5000, ())
    assert plain_http_allowed("203.0.113.1", 5000, ("203.0.113.1:5000",))
    assert plain_http_allowed("203.0.113.1", 5000, ("203.0.113.1",))
    assert not plain_http_allowed("203.0.113.1", 5001, ("203.0.113.1:5000",))
