"""Jobs, their leases and snapshots.

Revision ID: 0007
Revises: 0006
Create Date: 2025-01-07

Written by hand. Constraint names follow `cohort.storage.schema.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Reserved in the chain; the tables land with issue #6."""


def downgrade() -> None:
    """Nothing to drop yet."""
