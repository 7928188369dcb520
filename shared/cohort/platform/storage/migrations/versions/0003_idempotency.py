"""Idempotency: the first answer to each mutating request id, so a repeat returns it.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03

Written by hand. Constraint names follow `cohort.platform.storage.schema.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "idempotency_records" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "idempotency_records",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "scope", "request_id", name="pk_idempotency_records"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_records")
