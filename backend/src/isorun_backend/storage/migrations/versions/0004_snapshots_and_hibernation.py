"""Fork, snapshots and hibernation: the snapshots table, hibernation spans, sandbox lineage.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Existing sandboxes were never hibernated (``hibernated_s`` 0) and came from images.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.add_column(sa.Column("forked_from", sa.String(32), nullable=True))
        table.add_column(sa.Column("from_snapshot", sa.String(32), nullable=True))
        table.add_column(sa.Column("hibernated_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("hibernated_s", sa.Float(), nullable=False, server_default="0"))
        table.add_column(sa.Column("auto_hibernate_s", sa.Integer(), nullable=True))
    op.create_table(
        "hibernations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sandbox_id", sa.String(32), sa.ForeignKey("sandboxes.id"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_hibernations_sandbox_id", "hibernations", ["sandbox_id"])
    op.create_table(
        "snapshots",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("sandbox_id", sa.String(32), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("keep", sa.Boolean(), nullable=False),
        sa.Column("image", sa.String(512), nullable=False),
        sa.Column("image_ref", sa.String(512), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_snapshots_sandbox_id", "snapshots", ["sandbox_id"])
    op.create_index("ix_snapshots_tenant_created", "snapshots", ["tenant_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_snapshots_tenant_created", table_name="snapshots")
    op.drop_index("ix_snapshots_sandbox_id", table_name="snapshots")
    op.drop_table("snapshots")
    op.drop_index("ix_hibernations_sandbox_id", table_name="hibernations")
    op.drop_table("hibernations")
    with op.batch_alter_table("sandboxes") as table:
        for column in (
            "auto_hibernate_s",
            "hibernated_s",
            "hibernated_at",
            "from_snapshot",
            "forked_from",
        ):
            table.drop_column(column)
