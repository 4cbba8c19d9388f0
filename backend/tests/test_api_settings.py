"""Settings and the image name rules: no app, no VM."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from isorun_backend.core.config import BackendSettings
from isorun_backend.services import images as image_service
from isorun_backend.services.errors import ImageRejected
from isorun_backend.storage import Database
from isorun_hostd.images import errors as image_errors
from pydantic import ValidationError


def _leaf_image_errors() -> Iterator[type[image_errors.ImageError]]:
    for _, cls in inspect.getmembers(image_errors, inspect.isclass):
        if issubclass(cls, image_errors.ImageError) and not cls.__subclasses__():
            yield cls


def test_every_hostd_image_error_is_mapped_deliberately() -> None:
    assert set(_leaf_image_errors()) == set(image_service.IMAGE_ERRORS)


def test_short_names_resolve_through_the_alias_table() -> None:
    aliases = {"python": "python:3.12-slim-bookworm"}
    assert image_service.resolve("python", aliases) == "python:3.12-slim-bookworm"
    assert image_service.resolve("ghcr.io/x/y:1.0", aliases) == "ghcr.io/x/y:1.0"
    with pytest.raises(ImageRejected, match="known short names: python"):
        image_service.resolve("pyhton", aliases)


def test_settings_refuse_floating_aliases_and_implicit_prod_databases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ISORUN_IMAGE_ALIASES", '{"py": "python:3.12"}')
    assert BackendSettings().image_aliases == {"py": "python:3.12"}
    monkeypatch.setenv("ISORUN_IMAGE_ALIASES", '{"py": "python:latest"}')
    with pytest.raises(ValidationError, match="floating tag"):
        BackendSettings()
    monkeypatch.delenv("ISORUN_IMAGE_ALIASES")
    monkeypatch.setenv("ISORUN_ENVIRONMENT", "prod")
    with pytest.raises(ValidationError, match="ISORUN_DATABASE_URL"):
        BackendSettings()
    monkeypatch.setenv("ISORUN_DATABASE_URL", "sqlite+aiosqlite:////srv/isorun.db")
    assert BackendSettings().sqlalchemy_url == "sqlite+aiosqlite:////srv/isorun.db"


async def test_sqlite_connections_use_wal_without_an_fsync_per_commit(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'isorun.db'}")
    try:
        async with db.engine.connect() as connection:
            pragmas = [
                (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys")
            ]
    finally:
        await db.aclose()
    assert pragmas == ["wal", 1, 1]  # synchronous 1 is NORMAL
