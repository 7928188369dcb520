"""Relational storage: engines for SQLite (embedded) and PostgreSQL, the schema, its migrations, and
idempotent requests (`idempotency`: the first answer, stored with the work)."""

from cohort.platform.storage.engine import (
    Database,
    Session,
    Sessions,
    create_engine,
    session_factory,
    write_transaction,
)
from cohort.platform.storage.migrate import current_revision, head_revision, open_database, upgrade_to_head
from cohort.platform.urls import redact_url

__all__ = [
    "Database",
    "Session",
    "Sessions",
    "create_engine",
    "current_revision",
    "head_revision",
    "open_database",
    "redact_url",
    "session_factory",
    "upgrade_to_head",
    "write_transaction",
]
