"""Helpers the API test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from isorun_backend.core.config import BackendSettings

from tests.framework.registry import Registry, free_port

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
        # Every test app serves URLs, on a port of its own (TCP and UDP).
        **{"url_listen": f"127.0.0.1:{free_port()}", **overrides},
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


async def sh(client: httpx.AsyncClient, key: str, sandbox_id: str, command: str) -> str:
    """Run ``command`` (/bin/sh -c) in the sandbox; it must exit 0; its stdout."""
    response = await client.post(
        f"/v1/sandboxes/{sandbox_id}/exec", json={"command": command}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["exit_code"] == 0, result
    out: str = result["stdout"]
    return out
