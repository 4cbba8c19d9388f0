"""Helpers the API test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from isorun_backend.core.config import BackendSettings

from tests.framework.registry import Registry

PROBLEM = "application/problem+json"
PYTHON_IMAGE = "python:3.11-bookworm"
BUSYBOX_IMAGE = "busybox:1.0"

NewDatabase = Callable[[], str]
"""Makes an empty database on the session's engine and returns its URL (conftest: new_database)."""

# Modules where the database matters run on both engines (conftest.py: `engine`).
BOTH_ENGINES = pytest.mark.engines("sqlite", "postgresql")


def make_settings(
    data_dir: Path, run_dir: Path, registry: Registry, **overrides: Any
) -> BackendSettings:
    """Settings for a test app: aliases python and busybox name the registry's fixtures."""
    return BackendSettings(
        data_dir=data_dir,
        hostd_run_dir=run_dir,
        image_aliases={
            "python": registry.ref(PYTHON_IMAGE),
            "busybox": registry.ref(BUSYBOX_IMAGE),
        },
        reaper_interval_s=0.2,
        **overrides,
    )


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check that ``response`` is the spec's problem+json with ``code``; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"https://isorun.dev/problems/{code}"
    assert body["request_id"] == response.headers["x-request-id"]
    return body
