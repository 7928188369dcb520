"""Checkpoints.

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-05

Written by hand. Constraint names follow `cohort.storage.schema.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Reserved in the chain; the tables land with issue #5."""


def downgrade() -> None:
    """Nothing to drop yet."""
