"""An index of each tenant's trajectory ids by `superseded`.

Revision ID: 0009
Revises: 0008
Create Date: 2025-01-09

Similarity search first reads the ids of every trajectory it may rank (searches leave superseded ones
out); without this index that read scans the whole table, documents and all. With it the read is an
index-only scan.

Written by hand. Constraint names follow `cohort.platform.storage.schema.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_trajectories_tenant_live"


def upgrade() -> None:
    existing = {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("trajectories")}
    if INDEX not in existing:
        op.create_index(INDEX, "trajectories", ["tenant_id", "superseded", "trajectory_id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="trajectories")
