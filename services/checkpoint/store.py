"""Checkpoint rows: the committed checkpoints of each job, newest first by commit time.

Every method takes the tenant explicitly and never sees another tenant's rows: another tenant's
checkpoint is `NotFound`, exactly like a missing one. Write methods take the caller's session, so a
save's row, the rows retention removes and the idempotency record commit together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from sqlalchemy import and_, delete, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from cohort.platform.errors import NotFound
from cohort.platform.storage.engine import Database
from cohort.platform.storage.schema import CheckpointRow

_KEY_BATCH = 500
_ONE_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class FileEntry:
    name: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class CheckpointRecord:
    tenant_id: str
    checkpoint_id: str
    job_id: str
    iteration: int
    policy_id: str
    policy_version: int
    metrics: dict[str, float]
    cumulative_cost_micro_usd: int
    size_bytes: int
    blob_key: str
    manifest_sha256: str
    manifest: bytes
    """The manifest as written beside the files (JSON)."""
    create_time: datetime

    @cached_property
    def files(self) -> list[FileEntry]:
        return [
            FileEntry(name=entry["name"], size_bytes=entry["size_bytes"], sha256=entry["sha256"])
            for entry in json.loads(self.manifest)["files"]
        ]


def _record(row: CheckpointRow) -> CheckpointRecord:
    return CheckpointRecord(
        tenant_id=row.tenant_id,
        checkpoint_id=row.checkpoint_id,
        job_id=row.job_id,
        iteration=row.iteration,
        policy_id=row.policy_id,
        policy_version=row.policy_version,
        metrics=json.loads(row.metrics),
        cumulative_cost_micro_usd=row.cumulative_cost_micro_usd,
        size_bytes=row.size_bytes,
        blob_key=row.blob_key,
        manifest_sha256=row.manifest_sha256,
        manifest=row.manifest,
        create_time=row.create_time,
    )


def _row(record: CheckpointRecord) -> CheckpointRow:
    return CheckpointRow(
        tenant_id=record.tenant_id,
        checkpoint_id=record.checkpoint_id,
        job_id=record.job_id,
        iteration=record.iteration,
        policy_id=record.policy_id,
        policy_version=record.policy_version,
        metrics=json.dumps(record.metrics, allow_nan=False, sort_keys=True),
        cumulative_cost_micro_usd=record.cumulative_cost_micro_usd,
        size_bytes=record.size_bytes,
        blob_key=record.blob_key,
        manifest_sha256=record.manifest_sha256,
        manifest=record.manifest,
        create_time=record.create_time,
    )


def _newest_first():
    return (CheckpointRow.create_time.desc(), CheckpointRow.checkpoint_id.desc())


class CheckpointStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    # -- within a save's transaction ------------------------------------------------------------------

    async def lock_job(self, session: AsyncSession, tenant_id: str, job_id: str) -> None:
        """Serializes saves of one job until the transaction ends (SQLite: its write lock already does)."""
        if not self._database.is_sqlite:
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                {"key": f"cohort.checkpoint:{tenant_id}:{job_id}"},
            )

    async def history(self, session: AsyncSession, tenant_id: str, job_id: str) -> list[CheckpointRecord]:
        """The job's committed checkpoints, oldest first."""
        rows = await session.scalars(
            select(CheckpointRow)
            .where(CheckpointRow.tenant_id == tenant_id, CheckpointRow.job_id == job_id)
            .order_by(CheckpointRow.create_time, CheckpointRow.checkpoint_id)
        )
        return [_record(row) for row in rows]

    @staticmethod
    def next_create_time(history: Sequence[CheckpointRecord], now: datetime) -> datetime:
        """`now`, or just after the job's newest checkpoint when the clock has not moved past it."""
        if history and history[-1].create_time >= now:
            return history[-1].create_time + _ONE_TICK
        return now

    @staticmethod
    async def add(session: AsyncSession, record: CheckpointRecord) -> None:
        """Inserts the row now rather than at COMMIT: all a save writes is sent before its commit point."""
        session.add(_row(record))
        await session.flush()

    async def delete_rows(
        self, session: AsyncSession, tenant_id: str, checkpoint_ids: Iterable[str]
    ) -> list[CheckpointRecord]:
        """Deletes the rows of `checkpoint_ids` (those that exist) and returns what they were."""
        ids = list(checkpoint_ids)
        if not ids:
            return []
        rows = list(
            await session.scalars(
                select(CheckpointRow).where(
                    CheckpointRow.tenant_id == tenant_id, CheckpointRow.checkpoint_id.in_(ids)
                )
            )
        )
        if rows:
            await session.execute(
                delete(CheckpointRow).where(
                    CheckpointRow.tenant_id == tenant_id,
                    CheckpointRow.checkpoint_id.in_([row.checkpoint_id for row in rows]),
                )
            )
        return [_record(row) for row in rows]

    @staticmethod
    async def delete_history_rows(
        session: AsyncSession, tenant_id: str, records: Sequence[CheckpointRecord]
    ) -> None:
        """Deletes the rows of `records`, read in this transaction under the job's lock."""
        if records:
            await session.execute(
                delete(CheckpointRow).where(
                    CheckpointRow.tenant_id == tenant_id,
                    CheckpointRow.checkpoint_id.in_([r.checkpoint_id for r in records]),
                )
            )

    # -- reads ---------------------------------------------------------------------------------------

    async def get(self, tenant_id: str, checkpoint_id: str) -> CheckpointRecord:
        async with self._database.sessions() as session:
            row = await session.get(CheckpointRow, (tenant_id, checkpoint_id))
        if row is None:
            raise NotFound(f"checkpoint {checkpoint_id!r} not found")
        return _record(row)

    async def page(
        self, tenant_id: str, job_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[CheckpointRecord]:
        """Up to `limit` checkpoints of the job, newest first, after the keyset position `after`."""
        query = select(CheckpointRow).where(
            CheckpointRow.tenant_id == tenant_id, CheckpointRow.job_id == job_id
        )
        if after is not None:
            after_time, after_id = after
            query = query.where(
                or_(
                    CheckpointRow.create_time < after_time,
                    and_(CheckpointRow.create_time == after_time, CheckpointRow.checkpoint_id < after_id),
                )
            )
        async with self._database.sessions() as session:
            rows = await session.scalars(query.order_by(*_newest_first()).limit(limit))
            return [_record(row) for row in rows]

    async def exists(self, blob_key: str) -> bool:
        async with self._database.sessions() as session:
            found = await session.scalar(
                select(CheckpointRow.blob_key).where(CheckpointRow.blob_key == blob_key)
            )
        return found is not None

    async def committed_blob_keys(self, blob_keys: Sequence[str]) -> set[str]:
        """Which of `blob_keys` belong to a committed checkpoint (of any tenant)."""
        committed: set[str] = set()
        async with self._database.sessions() as session:
            for start in range(0, len(blob_keys), _KEY_BATCH):
                chunk = list(blob_keys[start : start + _KEY_BATCH])
                committed.update(
                    await session.scalars(
                        select(CheckpointRow.blob_key).where(CheckpointRow.blob_key.in_(chunk))
                    )
                )
        return committed
