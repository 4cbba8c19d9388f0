"""Reference parsing, Docker Hub normalisation and the create-time pinning rule."""

from __future__ import annotations

import pytest
from isorun_hostd.images import FloatingReference, InvalidReference, Reference, refuse_floating

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "api_host"),
    [
        ("python", "docker.io", "library/python", None, None, "registry-1.docker.io"),
        ("python:3.12", "docker.io", "library/python", "3.12", None, "registry-1.docker.io"),
        (
            "docker.io/python:3.12",
            "docker.io",
            "library/python",
            "3.12",
            None,
            "registry-1.docker.io",
        ),
        (
            "index.docker.io/library/python:3",
            "docker.io",
            "library/python",
            "3",
            None,
            "registry-1.docker.io",
        ),
        ("bitnami/redis:7.2", "docker.io", "bitnami/redis", "7.2", None, "registry-1.docker.io"),
        (f"python@{DIGEST}", "docker.io", "library/python", None, DIGEST, "registry-1.docker.io"),
        (
            f"python:3.12@{DIGEST}",
            "docker.io",
            "library/python",
            "3.12",
            DIGEST,
            "registry-1.docker.io",
        ),
        ("ghcr.io/owner/repo/sub:v1", "ghcr.io", "owner/repo/sub", "v1", None, "ghcr.io"),
        (
            "127.0.0.1:5000/isorun/busybox:1.0",
            "127.0.0.1:5000",
            "isorun/busybox",
            "1.0",
            None,
            "127.0.0.1:5000",
        ),
        ("localhost/x", "localhost", "x", None, None, "localhost"),
        ("localhost:5000/a/b:c", "localhost:5000", "a/b", "c", None, "localhost:5000"),
        ("[::1]:5000/a:b", "[::1]:5000", "a", "b", None, "[::1]:5000"),
        ("Registry/a:b", "Registry", "a", "b", None, "Registry"),
        (
            "a__b/e---f.g_h:T_1.x-y",
            "docker.io",
            "a__b/e---f.g_h",
            "T_1.x-y",
            None,
            "registry-1.docker.io",
        ),
    ],
)
def test_parse(  # noqa: PLR0917 - one argument per column of the table
    text: str, registry: str, repository: str, tag: str | None, digest: str | None, api_host: str
) -> None:
    reference = Reference.parse(text)
    assert (reference.registry, reference.repository, reference.tag, reference.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert reference.api_host == api_host
    assert reference.pinned is (digest is not None)


def test_pinned_form_and_target() -> None:
    reference = Reference.parse("python:3.12")
    assert reference.target == "3.12"
    assert Reference.parse("python").target == "latest"
    pinned = reference.with_digest(DIGEST)
    assert str(pinned) == f"docker.io/library/python@{DIGEST}"
    assert pinned.target == DIGEST
    assert str(Reference.parse("127.0.0.1:5000/a/b:1")) == "127.0.0.1:5000/a/b:1"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty name"),
        ("Python:3", "lowercase"),
        ("python:", "bad tag"),
        ("python:-x", "bad tag"),
        ("python@sha256:abc", "digest"),
        ("python@md5:" + "a" * 32, "digest"),
        ("a//b:1", "component"),
        ("a/b_:1", "component"),
        ("a__b.c/x:1", "bad registry"),
        ("exa mple/x:1", "component"),
        ("x" * 300 + ":1", "longer than"),
    ],
)
def test_invalid(text: str, problem: str) -> None:
    with pytest.raises(InvalidReference) as raised:
        Reference.parse(text)
    assert problem in str(raised.value)
    assert repr(text) in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "python",
            "image 'python' has no tag: pin a version tag or a digest, "
            "e.g. python:<version> or python@sha256:<digest>",
        ),
        (
            "python:latest",
            "image 'python:latest' uses the floating tag 'latest': pin a version tag or a digest, "
            "e.g. python:<version> or python@sha256:<digest>",
        ),
        ("python:lts", "floating tag 'lts'"),
        ("127.0.0.1:5000/isorun/busybox:stable", "e.g. 127.0.0.1:5000/isorun/busybox:<version>"),
        ("ghcr.io/o/r:LATEST", "floating tag 'LATEST'"),
    ],
)
def test_refuse_floating(text: str, message: str) -> None:
    with pytest.raises(FloatingReference) as raised:
        refuse_floating(text)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "text", ["python:3.12", f"python@{DIGEST}", f"python:latest@{DIGEST}", "a/b:1.0-latest"]
)
def test_accept_pinned_or_versioned(text: str) -> None:
    assert refuse_floating(text) == Reference.parse(text)
