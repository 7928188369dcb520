"""Trajectories: the trajectory store, its labels and its full-text search.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

Written by hand. Constraint names follow `cohort.platform.storage.schema.NAMING_CONVENTION`. Full-text search
is dialect-specific DDL: an FTS5 table on SQLite (kept in sync by the store, in the same transaction
as the row), an expression GIN index over `to_tsvector('english', search_text)` on PostgreSQL. Both
are left out of autogenerate comparisons by `cohort.platform.storage.schema.include_object`. Every statement
checks for existing objects first, so re-running the upgrade on a half-migrated database is safe.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FTS_TABLE = "trajectories_fts"
TSV_INDEX = "ix_trajectories_search_tsv"

INDEXES = {
    "ix_trajectories_tenant_create": ["tenant_id", "create_time", "trajectory_id"],
    "ix_trajectories_tenant_agent": ["tenant_id", "agent_name", "agent_version"],
    "ix_trajectories_tenant_job": ["tenant_id", "job_id", "create_time", "trajectory_id"],
    "ix_trajectories_tenant_group": ["tenant_id", "group_id"],
    "ix_trajectories_tenant_query": ["tenant_id", "query_id"],
    "ix_trajectories_tenant_outcome": ["tenant_id", "success", "termination_reason"],
    "ix_trajectories_tenant_reward": ["tenant_id", "reward"],
}


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    tables = set(inspector.get_table_names())
    if "trajectories" not in tables:
        op.create_table(
            "trajectories",
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("trajectory_id", sa.String(128), nullable=False),
            sa.Column("agent_name", sa.String(200), nullable=False),
            sa.Column("agent_version", sa.String(200), nullable=False),
            sa.Column("job_id", sa.String(128), nullable=False),
            sa.Column("group_id", sa.String(128), nullable=False),
            sa.Column("iteration", sa.BigInteger(), nullable=False),
            sa.Column("query_id", sa.String(200), nullable=False),
            sa.Column("success", sa.Boolean(), nullable=True),
            sa.Column("termination_reason", sa.Integer(), nullable=False),
            sa.Column("reward", sa.Double(), nullable=True),
            sa.Column("cost_micro_usd", sa.BigInteger(), nullable=False),
            sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
            sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
            sa.Column("superseded", sa.Boolean(), server_default=sa.false(), nullable=False),
            sa.Column("content_sha256", sa.String(64), nullable=False),
            sa.Column("document", sa.LargeBinary(), nullable=False),
            sa.Column("search_text", sa.Text(), nullable=False),
            sa.Column("embedding", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "trajectory_id", name="pk_trajectories"),
        )
    existing = {index["name"] for index in sa.inspect(bind).get_indexes("trajectories")}
    for name, columns in INDEXES.items():
        if name not in existing:
            op.create_index(name, "trajectories", columns)

    if "trajectory_labels" not in tables:
        op.create_table(
            "trajectory_labels",
            sa.Column("tenant_id", sa.String(128), nullable=False),
            sa.Column("trajectory_id", sa.String(128), nullable=False),
            sa.Column("key", sa.String(128), nullable=False),
            sa.Column("value", sa.String(1024), nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "trajectory_id", "key", name="pk_trajectory_labels"),
        )
    label_indexes = {index["name"] for index in sa.inspect(bind).get_indexes("trajectory_labels")}
    if "ix_trajectory_labels_tenant_key_value" not in label_indexes:
        op.create_index(
            "ix_trajectory_labels_tenant_key_value", "trajectory_labels", ["tenant_id", "key", "value"]
        )

    if bind.dialect.name == "sqlite":
        # A regular (content-storing) FTS5 table: the trajectories table has no stable integer rowid
        # to point an external-content table at, and VACUUM may renumber implicit rowids.
        op.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
            "search_text, tenant_id UNINDEXED, trajectory_id UNINDEXED, tokenize = 'porter unicode61')"
        )
    elif bind.dialect.name == "postgresql":
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {TSV_INDEX} ON trajectories "
            "USING gin (to_tsvector('english'::regconfig, search_text))"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
    elif bind.dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {TSV_INDEX}")
    op.drop_index("ix_trajectory_labels_tenant_key_value", table_name="trajectory_labels")
    op.drop_table("trajectory_labels")
    for name in reversed(list(INDEXES)):
        op.drop_index(name, table_name="trajectories")
    op.drop_table("trajectories")
