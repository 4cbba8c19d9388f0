"""Where the SDK finds its API key and URL: explicit arguments, then the environment.

This is the only module that reads `os.environ`.

| variable          | argument  | default                 |
|-------------------|-----------|-------------------------|
| `ISORUN_API_KEY`  | `api_key` | none: a key is required |
| `ISORUN_API_URL`  | `api_url` | `http://127.0.0.1:8080` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from isorun._errors import UsageError

DEFAULT_API_URL = "http://127.0.0.1:8080"
API_KEY_ENV = "ISORUN_API_KEY"
API_URL_ENV = "ISORUN_API_URL"


@dataclass(frozen=True)
class Config:
    """Resolved connection settings."""

    api_key: str
    api_url: str


def resolve(
    api_key: str | None = None,
    api_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge explicit arguments over the environment.

    Args:
        api_key: Wins over `ISORUN_API_KEY` when given.
        api_url: Wins over `ISORUN_API_URL` when given.
        environ: The environment to read; `os.environ` when None.

    Returns:
        The settings, with the URL's trailing slash removed.

    Raises:
        UsageError: No API key anywhere. Every route but health needs one, local backends
            included.
    """
    env = os.environ if environ is None else environ
    key = api_key or env.get(API_KEY_ENV)
    if not key:
        raise UsageError(
            f"no isorun API key: set {API_KEY_ENV} or pass api_key=; `isorun keys create` makes one"
        )
    url = api_url or env.get(API_URL_ENV) or DEFAULT_API_URL
    return Config(api_key=key, api_url=url.rstrip("/"))
