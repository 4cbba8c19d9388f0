"""Quota overrides on tenants, quota reservations, and the stop time metering needs.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-01

The added columns are nullable, so both engines add them in place (SQLite's ADD COLUMN needs
no table copy). Rows stopped before this revision get the best bound there is for their stop:
the earlier of their deletion and their expiry.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("max_sandboxes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_vcpus", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_memory_mib", sa.Integer(), nullable=True))
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE sandboxes SET stopped_at = CASE"
        " WHEN deleted_at IS NOT NULL AND deleted_at < expires_at THEN deleted_at"
        " ELSE expires_at END"
        " WHERE state != 'running'"
    )
    op.create_table(
        "quota_reservations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_quota_reservations_tenant_id", "quota_reservations", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_quota_reservations_tenant_id", "quota_reservations")
    op.drop_table("quota_reservations")
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("stopped_at")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("max_memory_mib")
        batch.drop_column("max_vcpus")
        batch.drop_column("max_sandboxes")
