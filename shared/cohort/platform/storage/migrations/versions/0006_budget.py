"""Budget limits, reservations and the usage ledger.

Revision ID: 0006
Revises: 0005
Create Date: 2025-01-06

Written by hand. Constraint names follow `cohort.platform.storage.schema.NAMING_CONVENTION`. Every statement
checks for existing objects first, so re-running the upgrade on a half-migrated database is safe.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RESERVATION_INDEXES = {
    "ix_budget_reservations_tenant_month_state": ["tenant_id", "month", "state"],
    "ix_budget_reservations_tenant_job_state": ["tenant_id", "job_id", "state"],
    "ix_budget_reservations_state_expire": ["state", "expire_time"],
}


def upgrade() -> None:
    bind = op.get_bind()
    tables = set(sa.inspect(bind).get_table_names())
    if "budget_tenant_limits" not in tables:
        op.create_table(
            "budget_tenant_limits",
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("monthly_limit_micro_usd", sa.BigInteger(), nullable=False),
            sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", name="pk_budget_tenant_limits"),
        )
    if "budget_months" not in tables:
        op.create_table(
            "budget_months",
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("month", sa.String(7), nullable=False),
            sa.Column("spent_micro_usd", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "month", name="pk_budget_months"),
        )
    if "budget_jobs" not in tables:
        op.create_table(
            "budget_jobs",
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("job_id", sa.String(128), nullable=False),
            sa.Column("limit_micro_usd", sa.BigInteger(), nullable=False),
            sa.Column("spent_micro_usd", sa.BigInteger(), nullable=False),
            sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "job_id", name="pk_budget_jobs"),
        )
    if "budget_reservations" not in tables:
        op.create_table(
            "budget_reservations",
            sa.Column("reservation_id", sa.String(64), nullable=False),
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("job_id", sa.String(128), nullable=False),
            sa.Column("month", sa.String(7), nullable=False),
            sa.Column("amount_micro_usd", sa.BigInteger(), nullable=False),
            sa.Column("spent_micro_usd", sa.BigInteger(), nullable=False),
            sa.Column("state", sa.Integer(), nullable=False),
            sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("reservation_id", name="pk_budget_reservations"),
        )
    existing = {index["name"] for index in sa.inspect(bind).get_indexes("budget_reservations")}
    for name, columns in RESERVATION_INDEXES.items():
        if name not in existing:
            op.create_index(name, "budget_reservations", columns)
    if "budget_model_usage" not in tables:
        op.create_table(
            "budget_model_usage",
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("month", sa.String(7), nullable=False),
            sa.Column("job_id", sa.String(128), nullable=False),
            sa.Column("model", sa.String(200), nullable=False),
            sa.Column("input_tokens", sa.BigInteger(), nullable=False),
            sa.Column("output_tokens", sa.BigInteger(), nullable=False),
            sa.Column("cache_read_input_tokens", sa.BigInteger(), nullable=False),
            sa.Column("cache_creation_input_tokens", sa.BigInteger(), nullable=False),
            sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "month", "job_id", "model", name="pk_budget_model_usage"),
        )


def downgrade() -> None:
    for table in (
        "budget_model_usage",
        "budget_reservations",
        "budget_jobs",
        "budget_months",
        "budget_tenant_limits",
    ):
        op.drop_table(table)
