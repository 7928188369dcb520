"""Policies and their immutable versions.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04

Written by hand. Constraint names follow `cohort.storage.schema.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Reserved in the chain; the tables land with issue #4/#5."""


def downgrade() -> None:
    """Nothing to drop yet."""
