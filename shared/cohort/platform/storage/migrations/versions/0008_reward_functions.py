"""Custom reward functions registered by name, per tenant.

Revision ID: 0008
Revises: 0007
Create Date: 2025-01-08

Written by hand. Constraint names follow `cohort.platform.storage.schema.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "reward_functions" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "reward_functions",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("entry_point", sa.String(500), nullable=False),
        sa.Column("address", sa.String(300), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_reward_functions"),
    )


def downgrade() -> None:
    op.drop_table("reward_functions")
