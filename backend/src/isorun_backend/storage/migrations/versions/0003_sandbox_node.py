"""The node each sandbox runs on.

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-01

Sandboxes from before this revision ran in the embedded hostd, so they get "embedded".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.add_column(
            sa.Column("node", sa.String(64), nullable=False, server_default="embedded")
        )


def downgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.drop_column("node")
