"""The tenants and API-key tables: rows in and out, no rules.

Who may see or change which key, and which keys are protected, is `service.py`'s. Write methods take
the caller's session (from `transaction`), so a revocation's checks and its update commit together.
Records never carry a secret's hash; only `credential` returns it, for a lookup to compare against.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cohort.platform.storage.engine import write_transaction
from cohort.platform.storage.schema import ApiKey, Tenant, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiKeyRecord:
    """What may be shown about a key: never its secret or the secret's hash."""

    id: str
    tenant_id: str
    name: str
    is_admin: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _record(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        is_admin=row.is_admin,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class ApiKeyStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with write_transaction(self._sessions) as session:
            yield session

    # -- within the caller's transaction -----------------------------------------------------------

    @staticmethod
    async def insert_tenant_if_missing(session: AsyncSession, tenant_id: str, display_name: str) -> bool:
        """True when this call created the tenant; a concurrent creation is no error."""
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(Tenant)
            .values(id=tenant_id, display_name=display_name, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["id"])
        )
        result = cast("CursorResult[Any]", await session.execute(statement))
        return result.rowcount == 1

    @staticmethod
    def add_key(session: AsyncSession, record: ApiKeyRecord, secret_hash: str) -> None:
        session.add(
            ApiKey(
                id=record.id,
                tenant_id=record.tenant_id,
                name=record.name,
                secret_hash=secret_hash,
                is_admin=record.is_admin,
                created_at=record.created_at,
            )
        )

    @staticmethod
    async def active_admin_ids(session: AsyncSession, *, except_named: str) -> set[str]:
        """The ids of the active admin keys not named `except_named`, locked until the transaction ends."""
        query = (
            select(ApiKey.id)
            .where(ApiKey.is_admin.is_(True), ApiKey.revoked_at.is_(None), ApiKey.name != except_named)
            .order_by(ApiKey.id)
        )
        if session.get_bind().dialect.name == "postgresql":
            # Two racing revocations of the last two admin keys must not both see the other one.
            # SQLite needs nothing: write_transaction holds its only write lock already.
            query = query.with_for_update()
        return set((await session.scalars(query)).all())

    @staticmethod
    async def revoke(session: AsyncSession, key_id: str, at: datetime) -> ApiKeyRecord:
        """Sets `revoked_at` unless it is set already, and returns the key as stored."""
        # Conditional, so two racing revocations keep the first timestamp.
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=at)
            .execution_options(synchronize_session=False)
        )
        row = await session.get(ApiKey, key_id, populate_existing=True)
        if row is None:
            raise LookupError(f"API key {key_id} vanished within its revocation's transaction")
        return _record(row)

    # -- on their own ----------------------------------------------------------------------------

    async def get(self, key_id: str, session: AsyncSession | None = None) -> ApiKeyRecord | None:
        if session is not None:
            row = await session.get(ApiKey, key_id)
        else:
            async with self._sessions() as own:
                row = await own.get(ApiKey, key_id)
        return None if row is None else _record(row)

    async def credential(self, key_id: str) -> tuple[ApiKeyRecord, str] | None:
        """The key and the stored hash of its secret."""
        async with self._sessions() as session:
            row = await session.get(ApiKey, key_id)
        return None if row is None else (_record(row), row.secret_hash)

    async def page(
        self,
        tenant_id: str,
        *,
        include_revoked: bool,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[ApiKeyRecord]:
        """Up to `limit` of the tenant's keys, oldest first (ties by id), after the position `after`."""
        query = select(ApiKey).where(ApiKey.tenant_id == tenant_id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        if after is not None:
            created_at, key_id = after
            query = query.where(
                or_(ApiKey.created_at > created_at, and_(ApiKey.created_at == created_at, ApiKey.id > key_id))
            )
        query = query.order_by(ApiKey.created_at, ApiKey.id).limit(limit)
        async with self._sessions() as session:
            return [_record(row) for row in (await session.scalars(query)).all()]

    async def mark_used(self, key_id: str, now: datetime, *, unless_used_after: datetime) -> bool:
        """Sets `last_used_at` to `now` unless another process already set it after
        `unless_used_after`; False when the database refused the write (logged with its cause)."""
        try:
            async with write_transaction(self._sessions) as session:
                await session.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.id == key_id,
                        or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= unless_used_after),
                    )
                    .values(last_used_at=now)
                    .execution_options(synchronize_session=False)
                )
        except SQLAlchemyError:
            log.debug("last use of API key %s not written", key_id, exc_info=True)
            return False
        return True
