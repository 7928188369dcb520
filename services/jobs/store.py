"""The jobs table: lifecycle transitions, listing, and the leases of the workers running jobs.

Every change to a job bumps its `revision` (what `WatchJob` orders snapshots by) and returns the new
snapshot, which the caller publishes once the transaction has committed. Worker-side writes
(`write_progress`, `finish`, `release`) are fenced: they only apply while the row's `fencing_token`
is the one the worker claimed the job with, and raise `LeaseLost` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import uuid4

from google.rpc import status_pb2
from sqlalchemy import and_, bindparam, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from cohort.api.jobs.v1 import jobs_pb2
from cohort.platform.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from cohort.platform.paging import check_page_size, decode_page_token, encode_page_token
from cohort.platform.storage.engine import Database, write_transaction
from cohort.platform.storage.schema import JobRow, utcnow
from cohort.platform.timestamps import to_timestamp
from cohort.services.jobs.runner import LeaseLost

Job = jobs_pb2.Job
QUEUED, RUNNING, PAUSED = Job.STATE_QUEUED, Job.STATE_RUNNING, Job.STATE_PAUSED
SUCCEEDED, FAILED, CANCELLING, CANCELLED = (
    Job.STATE_SUCCEEDED,
    Job.STATE_FAILED,
    Job.STATE_CANCELLING,
    Job.STATE_CANCELLED,
)
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})
LEASED_STATES = (RUNNING, CANCELLING)
PROGRESS_BATCH = 500


def state_name(state: int) -> str:
    return Job.State.Name(state).removeprefix("STATE_") if state in Job.State.values() else str(state)


@dataclass(frozen=True)
class JobChange:
    """A committed change: the new snapshot plus the flags a worker needs that the proto does not carry."""

    job: jobs_pb2.Job
    pause_requested: bool = False
    cancel_requested: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.job.tenant_id, self.job.job_id)


@dataclass(frozen=True)
class Claim:
    """A job a worker now holds a lease on, with the fencing token its writes must carry."""

    change: JobChange
    fencing_token: int


@dataclass(frozen=True)
class LeaseState:
    fencing_token: int
    pause_requested: bool
    cancel_requested: bool


def row_to_job(row: JobRow) -> jobs_pb2.Job:
    job = jobs_pb2.Job(
        job_id=row.job_id,
        tenant_id=row.tenant_id,
        display_name=row.display_name,
        state=row.state,
        pause_reason=row.pause_reason,
        revision=row.revision,
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
        start_time=to_timestamp(row.start_time),
        end_time=to_timestamp(row.end_time),
    )
    job.spec.ParseFromString(row.spec)
    job.progress.ParseFromString(row.progress)
    if row.error is not None:
        job.error.ParseFromString(row.error)
    return job


def row_change(row: JobRow) -> JobChange:
    return JobChange(row_to_job(row), bool(row.pause_requested), bool(row.cancel_requested))


def _record_failed_attempt(row: JobRow, error: status_pb2.Status) -> None:
    progress = jobs_pb2.JobProgress.FromString(row.progress)
    progress.failed_attempts += 1
    progress.last_attempt_error.CopyFrom(error)
    row.progress = progress.SerializeToString()


def _touch(row: JobRow, now: datetime) -> None:
    row.revision += 1
    row.update_time = now


# Built once: composing a select through the ORM's operators costs more than running it on SQLite.
_JOB_ROW = select(JobRow).where(
    JobRow.tenant_id == bindparam("tenant_id"), JobRow.job_id == bindparam("job_id")
)
_JOB_ROW_LOCKED = _JOB_ROW.with_for_update()


class JobStore:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._for_update = not database.is_sqlite
        # SQLite has one writer at a time, and a connection waiting for the lock backs off in sleeps
        # of up to 100 ms: queueing this process's writers here instead keeps each write ~1 ms.
        self._sqlite_writers = asyncio.Lock() if database.is_sqlite else None
        self._pending_progress: list = []
        self._progress_writer: asyncio.Task | None = None

    @contextlib.asynccontextmanager
    async def writer_turn(self) -> AsyncIterator[None]:
        """Held around a write transaction opened elsewhere (an idempotent RPC's), on SQLite."""
        if self._sqlite_writers is None:
            yield
            return
        async with self._sqlite_writers:
            yield

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        if self._sqlite_writers is None:
            async with write_transaction(self._database.sessions) as session:
                yield session
            return
        async with self._sqlite_writers, write_transaction(self._database.sessions) as session:
            yield session

    @property
    def database(self) -> Database:
        return self._database

    def _locked(self, query):
        # SQLite's BEGIN IMMEDIATE already serializes writers; PostgreSQL needs the row lock.
        return query.with_for_update() if self._for_update else query

    async def _row(self, session: AsyncSession, tenant_id: str, job_id: str, *, lock: bool) -> JobRow:
        query = _JOB_ROW_LOCKED if lock and self._for_update else _JOB_ROW
        row = (await session.scalars(query, {"tenant_id": tenant_id, "job_id": job_id})).one_or_none()
        if row is None:
            raise NotFound(f"job {job_id!r} not found", metadata={"job_id": job_id})
        return row

    # -- the API side --------------------------------------------------------------------------

    async def create(
        self, session: AsyncSession, tenant_id: str, job_id: str, display_name: str, spec: jobs_pb2.JobSpec
    ) -> JobChange:
        job_id = job_id or f"job-{uuid4().hex[:16]}"
        if await session.get(JobRow, (tenant_id, job_id)) is not None:
            raise AlreadyExists(f"job {job_id!r} already exists", metadata={"job_id": job_id})
        now = utcnow()
        progress = jobs_pb2.JobProgress(iterations_total=spec.iterations)
        row = JobRow(
            tenant_id=tenant_id,
            job_id=job_id,
            display_name=display_name,
            state=QUEUED,
            pause_reason=jobs_pb2.PAUSE_REASON_UNSPECIFIED,
            pause_requested=False,
            cancel_requested=False,
            spec=spec.SerializeToString(deterministic=True),
            progress=progress.SerializeToString(),
            error=None,
            revision=1,
            lease_owner=None,
            lease_expires_at=None,
            fencing_token=0,
            create_time=now,
            update_time=now,
        )
        session.add(row)
        await session.flush()
        return row_change(row)

    async def get(self, tenant_id: str, job_id: str) -> jobs_pb2.Job:
        async with self._database.sessions() as session:
            return row_to_job(await self._row(session, tenant_id, job_id, lock=False))

    async def list(
        self, tenant_id: str, states: Sequence[int], page_size: int, page_token: str
    ) -> tuple[list[jobs_pb2.Job], str]:
        check_page_size(page_size)
        states = sorted(set(states))
        scope = {"tenant": tenant_id, "states": states, "order": "create_time desc"}
        position = decode_page_token(page_token, scope)
        query = select(JobRow).where(JobRow.tenant_id == tenant_id)
        if states:
            query = query.where(JobRow.state.in_(states))
        if position is not None:
            try:
                after_time, after_id = datetime.fromisoformat(position[0]), str(position[1])
            except (ValueError, IndexError, TypeError) as exc:
                raise InvalidArgument("page_token", "is not a token returned by a previous call") from exc
            query = query.where(
                or_(
                    JobRow.create_time < after_time,
                    and_(JobRow.create_time == after_time, JobRow.job_id < after_id),
                )
            )
        query = query.order_by(JobRow.create_time.desc(), JobRow.job_id.desc()).limit(page_size + 1)
        async with self._database.sessions() as session:
            rows = list((await session.scalars(query)).all())
        next_token = ""
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            next_token = encode_page_token(scope, [last.create_time.isoformat(), last.job_id])
        return [row_to_job(row) for row in rows], next_token

    async def request_pause(self, session: AsyncSession, tenant_id: str, job_id: str) -> JobChange:
        """QUEUED -> PAUSED at once; RUNNING -> pause requested (PAUSED at the next iteration boundary)."""
        row = await self._row(session, tenant_id, job_id, lock=True)
        now = utcnow()
        if row.state == QUEUED:
            row.state = PAUSED
            row.pause_reason = jobs_pb2.PAUSE_REASON_REQUESTED
            _touch(row, now)
        elif row.state == RUNNING:
            if not row.pause_requested:
                row.pause_requested = True
                _touch(row, now)
        elif row.state != PAUSED:
            raise FailedPrecondition(
                f"job {job_id!r} is {state_name(row.state)}: only a QUEUED or RUNNING job can be paused",
                metadata={"job_id": job_id, "state": state_name(row.state)},
            )
        await session.flush()
        return row_change(row)

    async def resume(self, session: AsyncSession, tenant_id: str, job_id: str) -> JobChange:
        """PAUSED -> QUEUED; a RUNNING job whose pause was requested but not reached keeps running."""
        row = await self._row(session, tenant_id, job_id, lock=True)
        now = utcnow()
        if row.state == PAUSED:
            row.state = QUEUED
            row.pause_reason = jobs_pb2.PAUSE_REASON_UNSPECIFIED
            row.pause_requested = False
            _touch(row, now)
        elif row.state == RUNNING and row.pause_requested:
            row.pause_requested = False
            _touch(row, now)
        else:
            raise FailedPrecondition(
                f"job {job_id!r} is {state_name(row.state)}: only a PAUSED job can be resumed",
                metadata={"job_id": job_id, "state": state_name(row.state)},
            )
        await session.flush()
        return row_change(row)

    async def request_cancel(self, session: AsyncSession, tenant_id: str, job_id: str) -> JobChange:
        """QUEUED or PAUSED -> CANCELLED at once; RUNNING -> CANCELLING (its worker stops it)."""
        row = await self._row(session, tenant_id, job_id, lock=True)
        now = utcnow()
        if row.state in (QUEUED, PAUSED):
            row.state = CANCELLED
            row.cancel_requested = True
            row.end_time = now
            _touch(row, now)
        elif row.state == RUNNING:
            row.state = CANCELLING
            row.cancel_requested = True
            _touch(row, now)
        elif row.state != CANCELLING:
            raise FailedPrecondition(
                f"job {job_id!r} is {state_name(row.state)}: a finished job cannot be cancelled",
                metadata={"job_id": job_id, "state": state_name(row.state)},
            )
        await session.flush()
        return row_change(row)

    # -- the worker side -----------------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        lease_seconds: float,
        limit: int,
        *,
        job_key: tuple[str, str] | None = None,
        take_any_lease: bool = False,
    ) -> tuple[list[Claim], list[JobChange]]:
        """Leases up to `limit` jobs to `owner`: QUEUED ones, and RUNNING ones whose lease expired
        (`take_any_lease`: every lease held by another owner, for a worker that knows all other
        workers are dead). Returns the claims, and the changes of jobs settled without running them:
        CANCELLING ones whose worker died become CANCELLED, RUNNING ones with a pause requested
        become PAUSED."""
        if limit <= 0:
            return [], []
        now = utcnow()
        lease_gone = or_(JobRow.lease_expires_at.is_(None), JobRow.lease_expires_at < now)
        if take_any_lease:
            lease_gone = or_(lease_gone, JobRow.lease_owner.is_(None), JobRow.lease_owner != owner)
        query = select(JobRow).where(
            or_(JobRow.state == QUEUED, and_(JobRow.state.in_(LEASED_STATES), lease_gone))
        )
        if job_key is not None:
            query = query.where(JobRow.tenant_id == job_key[0], JobRow.job_id == job_key[1])
        query = query.order_by(JobRow.create_time).limit(limit)
        if self._for_update:
            query = query.with_for_update(skip_locked=True)
        claims: list[Claim] = []
        settled: list[JobChange] = []
        expires = now + timedelta(seconds=lease_seconds)
        async with self._writing() as session:
            for row in (await session.scalars(query)).all():
                _touch(row, now)
                row.fencing_token += 1
                if row.state == CANCELLING or (row.state == RUNNING and row.pause_requested):
                    if row.state == CANCELLING:
                        row.state, row.end_time = CANCELLED, now
                    else:
                        row.state, row.pause_reason = PAUSED, jobs_pb2.PAUSE_REASON_REQUESTED
                        row.pause_requested = False
                    row.lease_owner, row.lease_expires_at = None, None
                    settled.append(row_change(row))
                    continue
                progress = jobs_pb2.JobProgress.FromString(row.progress)
                progress.attempt += 1
                row.progress = progress.SerializeToString()
                row.state = RUNNING
                row.lease_owner, row.lease_expires_at = owner, expires
                if row.start_time is None:
                    row.start_time = now
                claims.append(Claim(row_change(row), row.fencing_token))
        return claims, settled

    async def renew_leases(
        self, owner: str, lease_seconds: float, attempts: dict[tuple[str, str], int]
    ) -> dict[tuple[str, str], LeaseState]:
        """The heartbeat: extends the leases `owner` holds for the running `attempts` (key -> fencing
        token) and returns them with their request flags. A lease whose attempt is no longer running
        here is not renewed: it expires and the job is taken over."""
        if not attempts:
            return {}
        expires = utcnow() + timedelta(seconds=lease_seconds)
        held = and_(
            JobRow.lease_owner == owner,
            JobRow.state.in_(LEASED_STATES),
            tuple_(JobRow.tenant_id, JobRow.job_id, JobRow.fencing_token).in_(
                [(tenant, job_id, token) for (tenant, job_id), token in attempts.items()]
            ),
        )
        async with self._writing() as session:
            await session.execute(update(JobRow).where(held).values(lease_expires_at=expires))
            rows = await session.execute(
                select(
                    JobRow.tenant_id,
                    JobRow.job_id,
                    JobRow.fencing_token,
                    JobRow.pause_requested,
                    JobRow.cancel_requested,
                ).where(held)
            )
            return {
                (tenant, job_id): LeaseState(token, bool(pause), bool(cancel))
                for tenant, job_id, token, pause, cancel in rows
            }

    async def _fenced_row(self, session: AsyncSession, key: tuple[str, str], token: int) -> JobRow:
        row = (
            await session.scalars(
                self._locked(select(JobRow).where(JobRow.tenant_id == key[0], JobRow.job_id == key[1]))
            )
        ).one_or_none()
        if row is None or row.fencing_token != token or row.state not in LEASED_STATES:
            raise LeaseLost(f"job {key[1]!r}: the lease with fencing token {token} is no longer held")
        return row

    async def write_progress(
        self, key: tuple[str, str], token: int, progress: jobs_pb2.JobProgress, lease_seconds: float
    ) -> JobChange:
        """Stores a running job's progress if `token` is still its fencing token, else `LeaseLost`.

        Writes that arrive while one is in flight are committed together in the next transaction (each
        with its own fencing check), so a thousand running jobs cost a few transactions a second, not
        a thousand, and one database connection rather than one per job. The write runs in the
        batcher's task, so a caller cancelled meanwhile never cuts a transaction off halfway.
        """
        future = asyncio.get_running_loop().create_future()
        self._pending_progress.append((key, token, progress.SerializeToString(), lease_seconds, future))
        if self._progress_writer is None or self._progress_writer.done():
            self._progress_writer = asyncio.create_task(self._write_progress_batches(), name="jobs-progress")
        return await future

    async def drain(self) -> None:
        """Waits for the progress writes already submitted (before the database closes)."""
        while self._progress_writer is not None and not self._progress_writer.done():
            await asyncio.wait([self._progress_writer])

    async def _write_progress_batches(self) -> None:
        while self._pending_progress:
            batch = self._pending_progress[:PROGRESS_BATCH]
            del self._pending_progress[:PROGRESS_BATCH]
            try:
                results = await self._write_progress_batch(batch)
            except Exception as exc:
                results = [exc] * len(batch)
            for (*_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _write_progress_batch(self, batch) -> list[JobChange | Exception]:
        now = utcnow()
        keys = list({key for key, *_ in batch})
        query = select(JobRow).where(tuple_(JobRow.tenant_id, JobRow.job_id).in_(keys))
        results: list[JobChange | Exception] = []
        async with self._writing() as session:
            rows = {(r.tenant_id, r.job_id): r for r in (await session.scalars(self._locked(query))).all()}
            for key, token, progress, lease_seconds, _ in batch:
                row = rows.get(key)
                if row is None or row.fencing_token != token or row.state not in LEASED_STATES:
                    results.append(
                        LeaseLost(f"job {key[1]!r}: the lease with fencing token {token} is no longer held")
                    )
                    continue
                row.progress = progress
                row.lease_expires_at = now + timedelta(seconds=lease_seconds)
                _touch(row, now)
                results.append(row_change(row))
        return results

    async def finish(
        self,
        key: tuple[str, str],
        token: int,
        state: int,
        *,
        pause_reason: int = jobs_pb2.PAUSE_REASON_UNSPECIFIED,
        error: status_pb2.Status | None = None,
    ) -> JobChange:
        """Ends the attempt in `state` (SUCCEEDED, PAUSED, FAILED or CANCELLED); a requested cancel wins
        over SUCCEEDED, PAUSED and FAILED."""
        now = utcnow()
        async with self._writing() as session:
            row = await self._fenced_row(session, key, token)
            if row.cancel_requested and state in (SUCCEEDED, PAUSED, FAILED):
                state = CANCELLED
            row.state = state
            row.lease_owner, row.lease_expires_at = None, None
            row.pause_requested = False
            if state == PAUSED:
                row.pause_reason = pause_reason or jobs_pb2.PAUSE_REASON_REQUESTED
            else:
                row.end_time = now
            if error is not None:
                _record_failed_attempt(row, error)
                if state == FAILED:
                    row.error = error.SerializeToString()
            _touch(row, now)
            return row_change(row)

    async def retry_later(self, key: tuple[str, str], token: int, error: status_pb2.Status) -> JobChange:
        """A failed attempt that may be retried: the job goes back to QUEUED (a new attempt resumes
        from its latest checkpoint) with the failure counted; a requested cancel wins."""
        now = utcnow()
        async with self._writing() as session:
            row = await self._fenced_row(session, key, token)
            _record_failed_attempt(row, error)
            if row.cancel_requested:
                row.state, row.end_time = CANCELLED, now
            elif row.pause_requested:
                row.state, row.pause_reason = PAUSED, jobs_pb2.PAUSE_REASON_REQUESTED
            else:
                row.state = QUEUED
            row.pause_requested = False
            row.lease_owner, row.lease_expires_at = None, None
            _touch(row, now)
            return row_change(row)

    async def relaunch(self, session: AsyncSession, tenant_id: str, job_id: str) -> JobChange:
        """FAILED -> QUEUED with a fresh allowance of attempts; the next attempt resumes from the
        latest checkpoint."""
        row = await self._row(session, tenant_id, job_id, lock=True)
        if row.state != FAILED:
            raise FailedPrecondition(
                f"job {job_id!r} is {state_name(row.state)}: only a FAILED job can be relaunched",
                metadata={"job_id": job_id, "state": state_name(row.state)},
            )
        progress = jobs_pb2.JobProgress.FromString(row.progress)
        progress.failed_attempts = 0
        row.progress = progress.SerializeToString()
        row.state = QUEUED
        row.error = None
        row.end_time = None
        row.cancel_requested = False
        row.pause_requested = False
        _touch(row, utcnow())
        await session.flush()
        return row_change(row)

    async def release(self, key: tuple[str, str], token: int) -> JobChange:
        """A worker stopping gracefully hands the job back: RUNNING -> QUEUED, CANCELLING -> CANCELLED."""
        now = utcnow()
        async with self._writing() as session:
            row = await self._fenced_row(session, key, token)
            if row.state == CANCELLING:
                row.state, row.end_time = CANCELLED, now
            else:
                row.state = QUEUED
            row.lease_owner, row.lease_expires_at = None, None
            _touch(row, now)
            return row_change(row)

    async def claimable_keys(self, limit: int) -> list[tuple[str, str]]:
        """Keys of QUEUED jobs, oldest first (what a restarted Redis queue is refilled from)."""
        query = select(JobRow.tenant_id, JobRow.job_id).where(JobRow.state == QUEUED)
        async with self._database.sessions() as session:
            rows = await session.execute(query.order_by(JobRow.create_time).limit(limit))
            return [(tenant, job_id) for tenant, job_id in rows]
