"""Jobs, their leases and snapshots.

Revision ID: 0007
Revises: 0006
Create Date: 2025-01-07

Written by hand. Constraint names follow `cohort.platform.storage.schema.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_INDEXES = {
    "ix_jobs_tenant_create": ["tenant_id", "create_time", "job_id"],
    "ix_jobs_tenant_state_create": ["tenant_id", "state", "create_time", "job_id"],
    "ix_jobs_state_lease": ["state", "lease_expires_at"],
    "ix_jobs_lease_owner": ["lease_owner"],
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "jobs" not in inspector.get_table_names():
        op.create_table(
            "jobs",
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("job_id", sa.String(128), nullable=False),
            sa.Column("display_name", sa.String(200), nullable=False),
            sa.Column("state", sa.Integer(), nullable=False),
            sa.Column("pause_reason", sa.Integer(), nullable=False),
            sa.Column("pause_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
            sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
            sa.Column("spec", sa.LargeBinary(), nullable=False),
            sa.Column("progress", sa.LargeBinary(), nullable=False),
            sa.Column("error", sa.LargeBinary(), nullable=True),
            sa.Column("revision", sa.BigInteger(), nullable=False),
            sa.Column("lease_owner", sa.String(128), nullable=True),
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("fencing_token", sa.BigInteger(), nullable=False),
            sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
            sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
            sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
            sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("tenant_id", "job_id", name="pk_jobs"),
        )
    existing = {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("jobs")}
    for name, columns in JOB_INDEXES.items():
        if name not in existing:
            op.create_index(name, "jobs", columns)


def downgrade() -> None:
    for name in JOB_INDEXES:
        op.drop_index(name, table_name="jobs")
    op.drop_table("jobs")
