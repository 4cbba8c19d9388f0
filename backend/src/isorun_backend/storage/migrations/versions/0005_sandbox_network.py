"""Sandbox network: each sandbox's egress policy and secrets (NetworkSpec as JSON).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

Existing sandboxes get null: no egress at all, which is what they had.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.add_column(sa.Column("network", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.drop_column("network")
