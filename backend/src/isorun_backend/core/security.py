"""API keys: generation, hashing, and the principal a valid key authenticates as.

A key is ``isr_`` + 32 url-safe characters from ``secrets`` (192 bits). Only its SHA-256 is
stored: with that much entropy a fast hash is as safe as a slow one, and a lookup by hash
needs no per-key salt. Comparison happens in the database by that hash, so nothing here
compares secrets byte by byte.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

KEY_PREFIX = "isr_"
KEY_RANDOM_BYTES = 24  # token_urlsafe(24) is exactly 32 characters
KEY_LENGTH = len(KEY_PREFIX) + 32
# What a listing shows of a key: the prefix and 8 characters, never enough to use it.
DISPLAY_PREFIX_CHARS = len(KEY_PREFIX) + 8


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant that owns every object the request touches."""

    tenant_id: str
    key_id: str


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_CHARS]


def well_formed(key: str) -> bool:
    """Cheap shape check before touching the database."""
    return len(key) == KEY_LENGTH and key.startswith(KEY_PREFIX)
