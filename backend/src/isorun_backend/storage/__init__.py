"""Storage: the database engine, sessions and the Alembic migrations that shape it."""

from isorun_backend.storage.database import Database

__all__ = ["Database"]
