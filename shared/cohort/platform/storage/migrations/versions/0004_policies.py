"""Policies and their immutable versions.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04

Written by hand. Constraint names follow `cohort.platform.storage.schema.NAMING_CONVENTION`. Every statement
checks for existing objects first, so re-running the upgrade on a half-migrated database is safe.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POLICY_INDEXES = {"ix_policies_tenant_create": ["tenant_id", "create_time", "policy_id"]}


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "policies" not in tables:
        op.create_table(
            "policies",
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("policy_id", sa.String(128), nullable=False),
            sa.Column("display_name", sa.String(200), nullable=False),
            sa.Column("heads", sa.LargeBinary(), nullable=False),
            sa.Column("latest_version", sa.BigInteger(), nullable=False),
            sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
            sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "policy_id", name="pk_policies"),
        )
    existing = {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("policies")}
    for name, columns in POLICY_INDEXES.items():
        if name not in existing:
            op.create_index(name, "policies", columns)
    if "policy_versions" not in tables:
        op.create_table(
            "policy_versions",
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("policy_id", sa.String(128), nullable=False),
            sa.Column("version", sa.BigInteger(), nullable=False),
            sa.Column("parent_version", sa.BigInteger(), nullable=False),
            sa.Column("parameters", sa.LargeBinary(), nullable=False),
            sa.Column("parameters_sha256", sa.String(64), nullable=False),
            sa.Column("optimizer_state", sa.LargeBinary(), nullable=True),
            sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "policy_id", "version", name="pk_policy_versions"),
        )


def downgrade() -> None:
    op.drop_table("policy_versions")
    for name in POLICY_INDEXES:
        op.drop_index(name, table_name="policies")
    op.drop_table("policies")
