"""Tenants and their API keys: create, list, revoke, and authenticate a request's key.

The plain key exists only in the return value of ``create_key``; the database keeps its hash
and a display prefix. Used by the API (``authenticate``), the tests and the operator CLI.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from isorun_backend.core.security import (
    Principal,
    display_prefix,
    generate_key,
    hash_key,
    well_formed,
)
from isorun_backend.models import ApiKey, Tenant, utcnow
from isorun_backend.services.errors import NotFound, Unauthorized
from isorun_backend.storage import Database


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listings show it: never the key itself."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``key`` is shown once and cannot be recovered later."""

    info: KeyInfo
    key: str


async def create_tenant(db: Database, name: str) -> str:
    """Create a tenant; returns its id."""
    tenant = Tenant(id=f"tn-{secrets.token_hex(8)}", name=name)
    async with db.session() as session, session.begin():
        session.add(tenant)
    return tenant.id


async def list_tenants(db: Database) -> list[tuple[str, str]]:
    """Every tenant as (id, name), oldest first: the operator CLI's default tenant is the first."""
    async with db.session() as session:
        rows = await session.execute(select(Tenant.id, Tenant.name).order_by(Tenant.created_at))
        return [(tenant_id, name) for tenant_id, name in rows]


async def create_key(db: Database, tenant_id: str, name: str = "default") -> CreatedKey:
    """Create a key for ``tenant_id``.

    Raises:
        NotFound: no such tenant.
    """
    key = generate_key()
    row = ApiKey(
        id=f"key-{secrets.token_hex(8)}",
        tenant_id=tenant_id,
        name=name,
        prefix=display_prefix(key),
        key_hash=hash_key(key),
    )
    async with db.session() as session, session.begin():
        if await session.get(Tenant, tenant_id) is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        session.add(row)
    return CreatedKey(_info(row), key)


async def list_keys(db: Database, tenant_id: str) -> list[KeyInfo]:
    async with db.session() as session:
        rows = await session.scalars(
            select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
        )
        return [_info(row) for row in rows]


async def revoke_key(db: Database, key_id: str) -> KeyInfo:
    """Revoke a key; requests with it are refused from now on. Revoking twice is harmless.

    Raises:
        NotFound: no such key.
    """
    async with db.session() as session, session.begin():
        row = await session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"no API key {key_id!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _info(row)


async def authenticate(db: Database, key: str) -> Principal:
    """The principal of a presented key.

    Raises:
        Unauthorized: the key is malformed, unknown or revoked (one message for all three, so
            the answer does not tell a guesser which).
    """
    refused = Unauthorized("missing, unknown or revoked API key")
    if not well_formed(key):
        raise refused
    async with db.session() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        raise refused
    return Principal(tenant_id=row.tenant_id, key_id=row.id)


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.tenant_id, row.name, row.prefix, row.created_at, row.revoked_at)
