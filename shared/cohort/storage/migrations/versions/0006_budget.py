"""Budget limits, reservations and the usage ledger.

Revision ID: 0006
Revises: 0005
Create Date: 2025-01-06

Written by hand. Constraint names follow `cohort.storage.schema.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Reserved in the chain; the tables land with issue #6."""


def downgrade() -> None:
    """Nothing to drop yet."""
