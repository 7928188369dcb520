"""Checkpoints: one row per committed checkpoint (the commit point of a save).

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-05

Written by hand. Constraint names follow `cohort.platform.storage.schema.NAMING_CONVENTION`. Every statement
checks for existing objects first, so re-running the upgrade on a half-migrated database is safe.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_INDEX = "ix_checkpoints_tenant_job_create"


def upgrade() -> None:
    bind = op.get_bind()
    if "checkpoints" not in sa.inspect(bind).get_table_names():
        op.create_table(
            "checkpoints",
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("checkpoint_id", sa.String(64), nullable=False),
            sa.Column("job_id", sa.String(128), nullable=False),
            sa.Column("iteration", sa.BigInteger(), nullable=False),
            sa.Column("policy_id", sa.String(128), nullable=False),
            sa.Column("policy_version", sa.BigInteger(), nullable=False),
            sa.Column("metrics", sa.Text(), nullable=False),
            sa.Column("cumulative_cost_micro_usd", sa.BigInteger(), nullable=False),
            sa.Column("size_bytes", sa.BigInteger(), nullable=False),
            sa.Column("blob_key", sa.String(200), nullable=False),
            sa.Column("manifest_sha256", sa.String(64), nullable=False),
            sa.Column("manifest", sa.LargeBinary(), nullable=False),
            sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "checkpoint_id", name="pk_checkpoints"),
            sa.UniqueConstraint("blob_key", name="uq_checkpoints_blob_key"),
        )
    existing = {index["name"] for index in sa.inspect(bind).get_indexes("checkpoints")}
    if JOB_INDEX not in existing:
        op.create_index(JOB_INDEX, "checkpoints", ["tenant_id", "job_id", "create_time", "checkpoint_id"])


def downgrade() -> None:
    op.drop_index(JOB_INDEX, table_name="checkpoints")
    op.drop_table("checkpoints")
