"""Helpers the API test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM = "application/problem+json"


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
