"""Fixtures of the SDK tests: a configured environment, a respx router for the API, and (for
the tests marked `vm`) a real one: `isorun up` with real VMs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import respx

from tests.framework.isorun_up import Up, start_up

API_URL = "http://isorun.test"
API_KEY = "isr_test"


@pytest.fixture(autouse=True)
def isorun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees a key and URL from the environment, as a user's shell would set them."""
    monkeypatch.setenv("ISORUN_API_KEY", API_KEY)
    monkeypatch.setenv("ISORUN_API_URL", API_URL)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """The API, mocked with respx: a request no route matches fails the test."""
    with respx.mock(base_url=API_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
def sandbox_json() -> Callable[..., dict[str, Any]]:
    """A Sandbox object as the API returns it (spec/api.md), with overrides."""

    def make(**overrides: Any) -> dict[str, Any]:
        return {
            "id": "sb-1",
            "image": "python",
            "image_ref": "docker.io/library/python@sha256:" + "a" * 64,
            "state": "running",
            "vcpus": 1,
            "memory_mib": 1024,
            "created_at": "2025-01-01T00:00:00Z",
            "expires_at": "2025-01-01T00:05:00Z",
            "env": {},
            "metadata": {},
            "labels": {},
            **overrides,
        }

    return make


@pytest.fixture(scope="session")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`isorun up --local-images` in a subprocess, shared by the session's `vm` tests; pass
    its `url` and `key` explicitly (`isorun_env` points the environment elsewhere)."""
    with start_up(tmp_path_factory.mktemp("isorun-up")) as running:
        yield running
