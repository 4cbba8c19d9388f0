"""Alembic environment: migrations run on the connection the backend hands over.

The backend runs ``upgrade head`` itself at start (storage.database.Database.upgrade), inside
its async engine through ``run_sync``; there is no alembic.ini and no URL here.
"""

from __future__ import annotations

from alembic import context
from isorun_backend.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through isorun_backend.storage.Database.upgrade()")

# SQLite alters tables by copying them ("batch mode"); PostgreSQL alters in place.
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
