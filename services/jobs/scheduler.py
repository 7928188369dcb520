"""Running jobs: claims, leases, heartbeats, takeover, concurrency, pause and cancel.

The jobs table is the truth. A worker (one per job-manager process) claims jobs by writing itself
into a job's lease with a fencing token one higher than before, runs each claimed job's runner in its
own task, and renews all its leases with one heartbeat every third of the lease. A worker that stops
heartbeating (killed, partitioned, stalled) loses its jobs when their leases expire: the next claim
takes them over as a new attempt, and the old worker's fenced writes fail with `LeaseLost`.

Wake-ups only say "look now"; what to run is always decided by the claim in the database:
- embedded (no Redis): an in-process event, plus a sweep every second. A worker that holds the data
  directory's lock file knows no other job manager shares its SQLite database, so on start it takes
  over every lease at once instead of waiting for them to expire (a restart resumes in milliseconds).
- Redis (`settings.redis_url`): each queued job's key is pushed on a Redis list and every replica pops
  keys while it has free slots, which spreads jobs over the replicas; a sweep every second (bounded
  by free slots) picks up what the list lost and the jobs whose lease expired.

Pause and cancel reach the running job through the change fan-out (any replica) and, as a fallback,
through the flags every heartbeat reads back. A cancelled runner gets `CANCEL_GRACE_SECONDS` to
return before its task is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from google.rpc import code_pb2

from cohort.platform.context import Identity, current_identity
from cohort.platform.transient import Backoff, is_transient
from cohort.services.jobs import store as job_store
from cohort.services.jobs.failures import DEFAULT_MAX_ATTEMPTS, attempt_error, is_final
from cohort.services.jobs.runner import JobHandle, JobOutcome, JobRunner, LeaseLost, RunResult
from cohort.services.jobs.store import Claim, JobChange, JobStore
from cohort.services.jobs.watch import JobNotifier

log = logging.getLogger(__name__)
T = TypeVar("T")

CANCEL_GRACE_SECONDS = 3.0
"""How long a cancelled job's runner may take to return before its task is cancelled."""

SWEEP_SECONDS = 1.0
"""Longest time between two looks at the table for claimable jobs."""

CLAIM_BATCH = 100
RETRY_BACKOFF_SECONDS = (1.0, 30.0)
"""A failed attempt waits `first * 2**(failures - 1)`, jittered and capped at `last`, before the job is
queued again."""
WRITE_RETRY_SECONDS = 30.0
"""How long a job-manager write keeps retrying through a database restart (at least two leases)."""
JOB_MANAGER_KEY_ID = "job-manager"


class Wakeups:
    """In-process wake-ups: one event that makes the worker look at the table now."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def push(self, keys: list[tuple[str, str]]) -> None:
        if keys:
            self.event.set()

    async def close(self) -> None:
        pass


class RedisWakeups(Wakeups):
    """Queued job keys on a Redis list, popped by whichever replica has a free slot first."""

    def __init__(self, redis, list_key: str) -> None:
        super().__init__()
        self._redis = redis
        self._list_key = list_key

    async def push(self, keys: list[tuple[str, str]]) -> None:
        if not keys:
            return
        try:
            await self._redis.lpush(self._list_key, *(f"{tenant}\x00{job_id}" for tenant, job_id in keys))
        except Exception:
            log.warning("job wake-up push to Redis failed; the sweep will find the job", exc_info=True)

    async def pop(self, wait_seconds: float) -> tuple[str, str] | None:
        item = await self._redis.brpop([self._list_key], timeout=wait_seconds)
        if item is None:
            return None
        tenant, _, job_id = item[1].decode().partition("\x00")
        return (tenant, job_id)


@dataclass(eq=False)
class _Attempt:
    key: tuple[str, str]
    handle: JobHandle
    claimed_at: float
    seen_revision: int
    inner: asyncio.Task | None = None
    outer: asyncio.Task | None = None
    lease_lost: bool = False
    cancel_timer: asyncio.TimerHandle | None = None


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        notifier: JobNotifier,
        runner: JobRunner,
        *,
        lease_seconds: float,
        max_running_jobs: int,
        wakeups: Wakeups,
        lock_dir: Path | None = None,
        owned_only: bool = False,
    ) -> None:
        """`lock_dir`: the embedded data directory; holding its lock file lets this worker take over
        every lease at once (no other job manager can be using the database). `owned_only`: run only
        the jobs handed over with `adopt` (a CLI command's own job), never others from the table."""
        self._store = store
        self._notifier = notifier
        self._runner = runner
        self._lease_seconds = lease_seconds
        self._max_running = max_running_jobs
        self._wakeups = wakeups
        self._lock_dir = None if owned_only else lock_dir
        self._adopted: set[tuple[str, str]] | None = set() if owned_only else None
        self._lock_file = None
        self._exclusive = False
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[tuple[str, str], _Attempt] = {}
        self._loops: list[asyncio.Task] = []
        self._slot_free = asyncio.Event()
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._orphaned_claims: list[Claim] = []
        self._writes: set[asyncio.Future] = set()
        notifier.add_listener(self._on_change)

    @property
    def running_count(self) -> int:
        return len(self._running)

    async def start(self, ready: Callable[[], bool] = lambda: True) -> None:
        """Starts claiming once `ready()` (the process's channels to other services exist)."""
        if self._lock_dir is not None:
            self._exclusive = self._take_lock(self._lock_dir)
        self._loops.append(asyncio.create_task(self._claim_loop(ready), name="jobs-claim"))
        self._loops.append(asyncio.create_task(self._heartbeat_loop(), name="jobs-heartbeat"))
        if isinstance(self._wakeups, RedisWakeups):
            self._loops.append(asyncio.create_task(self._pop_loop(ready), name="jobs-pop"))
            # Refill the list with what is queued, in case Redis lost it.
            await self._wakeups.push(await self._store.claimable_keys(self._max_running))

    def _take_lock(self, directory: Path) -> bool:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / "jobs.lock", "a+")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            log.warning(
                "another job manager uses %s: its jobs are taken over only when their leases expire",
                directory,
            )
            return False
        self._lock_file = handle
        return True

    async def stop(self) -> None:
        """Graceful stop: cancels the running attempts and hands their jobs back (QUEUED), so another
        replica, or this process's successor, picks them up at once."""
        self._stopping = True
        self._stop_requested.set()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        attempts = list(self._running.values())
        for attempt in attempts:
            if attempt.inner is not None:
                attempt.inner.cancel()
        await asyncio.gather(*(a.outer for a in attempts if a.outer is not None), return_exceptions=True)
        await asyncio.gather(*self._writes, return_exceptions=True)
        await self._store.drain()
        released: list[JobChange] = []
        held = [(a.key, a.handle.fencing_token) for a in attempts]
        held += [(c.change.key, c.fencing_token) for c in self._orphaned_claims]
        for key, token in held:
            try:
                released.append(await self._store.release(key, token))
            except LeaseLost:
                pass
            except Exception:
                log.warning("job %s: could not hand back its lease", key[1], exc_info=True)
        await self._notifier.publish_all(released)
        await self._wakeups.push([c.key for c in released if c.job.state == job_store.QUEUED])
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def _shielded(self, operation: Awaitable[T]) -> T:
        """Runs a database write to its end even if the caller is cancelled meanwhile: a transaction
        cut off halfway can leave SQLite's write lock held on a pooled connection."""
        future = asyncio.ensure_future(operation)
        self._writes.add(future)
        future.add_done_callback(self._writes.discard)
        return await asyncio.shield(future)

    async def notify_queued(self, keys: list[tuple[str, str]]) -> None:
        """Jobs became QUEUED: wake this worker (embedded) or push them for any replica (Redis)."""
        await self._wakeups.push(keys)

    def adopt(self, key: tuple[str, str]) -> None:
        """An `owned_only` worker runs this job (created by its own command) from now on."""
        if self._adopted is not None:
            self._adopted.add(key)
            self._wakeups.event.set()

    async def _persist(self, write: Callable[[], Awaitable[T]]) -> T:
        """Runs a job write, retrying it through a database restart (a blip costs a retry, not the
        job); a write still failing after `WRITE_RETRY_SECONDS` raises."""
        backoff = Backoff(max(WRITE_RETRY_SECONDS, 2 * self._lease_seconds), initial=0.1)
        while True:
            try:
                return await self._shielded(write())
            except Exception as exc:
                delay = backoff.next_delay() if is_transient(exc) else None
                if delay is None:
                    raise
                log.warning("job database unavailable (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)

    # -- claiming ------------------------------------------------------------------------------

    def _free_slots(self) -> int:
        return self._max_running - len(self._running)

    async def _wait_for_slot(self) -> None:
        while self._free_slots() <= 0:
            self._slot_free.clear()
            await self._slot_free.wait()

    async def _claim_loop(self, ready: Callable[[], bool]) -> None:
        while not ready():  # noqa: ASYNC110 - set by the suite, which has no event to offer
            await asyncio.sleep(0.02)
        event = self._wakeups.event
        while True:
            try:
                await self._wait_for_slot()
                event.clear()
                await self._claim_some()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SWEEP_SECONDS):
                        await event.wait()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("claiming jobs failed; retrying", exc_info=True)
                await asyncio.sleep(SWEEP_SECONDS)

    async def _claim_some(self, job_key: tuple[str, str] | None = None) -> None:
        if self._adopted is not None:
            for key in [k for k in self._adopted if k not in self._running and (job_key in (None, k))]:
                if self._free_slots() > 0:
                    await self._claim_one(key)
            return
        while (free := self._free_slots()) > 0:
            limit = min(free, CLAIM_BATCH)
            claims, settled = await self._claim(
                self._store.claim(
                    self.owner,
                    self._lease_seconds,
                    limit,
                    job_key=job_key,
                    take_any_lease=self._exclusive,
                )
            )
            await self._notifier.publish_all([*settled, *(c.change for c in claims)])
            for claim in claims:
                self._start_attempt(claim)
            if job_key is not None or len(claims) + len(settled) < limit:
                return

    async def _claim_one(self, key: tuple[str, str]) -> None:
        claims, settled = await self._claim(
            self._store.claim(self.owner, self._lease_seconds, 1, job_key=key)
        )
        await self._notifier.publish_all([*settled, *(c.change for c in claims)])
        for claim in claims:
            self._start_attempt(claim)

    async def _claim(self, claiming: Awaitable[tuple[list[Claim], list[JobChange]]]):
        """A claim that runs to its end; if this worker stops meanwhile, the jobs it claimed are
        remembered so `stop` hands them back instead of leaving them leased to nobody."""
        future = asyncio.ensure_future(claiming)
        try:
            return await self._shielded(future)
        except asyncio.CancelledError:

            def orphaned(done: asyncio.Future) -> None:
                if not done.cancelled() and done.exception() is None:
                    self._orphaned_claims.extend(done.result()[0])

            future.add_done_callback(orphaned)
            raise

    async def _pop_loop(self, ready: Callable[[], bool]) -> None:
        while not ready():  # noqa: ASYNC110 - set by the suite, which has no event to offer
            await asyncio.sleep(0.02)
        assert isinstance(self._wakeups, RedisWakeups)
        while True:
            try:
                await self._wait_for_slot()
                key = await self._wakeups.pop(wait_seconds=1.0)
                if key is not None and key not in self._running:
                    await self._claim_some(job_key=key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("popping job wake-ups from Redis failed; retrying", exc_info=True)
                await asyncio.sleep(SWEEP_SECONDS)

    # -- running -------------------------------------------------------------------------------

    def _start_attempt(self, claim: Claim) -> None:
        change = claim.change
        handle = JobHandle(change.job, claim.fencing_token)
        attempt = _Attempt(
            key=change.key, handle=handle, claimed_at=time.monotonic(), seen_revision=change.job.revision
        )

        async def write_progress(progress):
            stored = await self._persist(
                lambda: self._store.write_progress(
                    attempt.key, handle.fencing_token, progress, self._lease_seconds
                )
            )
            self._apply_flags(attempt, stored)
            await self._notifier.publish(stored)
            return stored.job

        handle._write_progress = write_progress
        self._apply_flags(attempt, change)
        previous = self._running.get(attempt.key)
        if previous is not None:  # our own lease expired (a stall) and we re-claimed it
            previous.lease_lost = True
            if previous.inner is not None:
                previous.inner.cancel()
        self._running[attempt.key] = attempt
        context = contextvars.copy_context()
        context.run(current_identity.set, Identity(tenant_id=change.job.tenant_id, key_id=JOB_MANAGER_KEY_ID))
        attempt.inner = asyncio.create_task(
            self._runner.run(handle), name=f"job-{change.job.job_id}", context=context
        )
        attempt.outer = asyncio.create_task(
            self._supervise(attempt), name=f"job-{change.job.job_id}-supervisor"
        )

    def _apply_flags(self, attempt: _Attempt, change: JobChange) -> None:
        if change.job.revision < attempt.seen_revision:
            return
        attempt.seen_revision = change.job.revision
        attempt.handle.request_pause(change.pause_requested)
        if change.cancel_requested:
            self._cancel(attempt)

    def _cancel(self, attempt: _Attempt) -> None:
        if attempt.handle.cancelled.is_set():
            return
        attempt.handle.request_cancel()
        inner = attempt.inner
        if inner is not None:
            attempt.cancel_timer = asyncio.get_running_loop().call_later(CANCEL_GRACE_SECONDS, inner.cancel)

    def _on_change(self, change: JobChange) -> None:
        attempt = self._running.get(change.key)
        if attempt is not None:
            self._apply_flags(attempt, change)

    async def _supervise(self, attempt: _Attempt) -> None:
        job_id = attempt.key[1]
        requeued = False
        try:
            write = await self._ending(attempt)
            if write is None:
                return
            change = await self._persist(write)
            requeued = change.job.state == job_store.QUEUED
            await self._notifier.publish(change)
        except LeaseLost:
            log.info("job %s: lease lost before its attempt could be recorded", job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Its lease is no longer renewed (the attempt is gone): it expires and the job is taken over.
            log.warning(
                "job %s: recording the end of its attempt failed; its lease will expire",
                job_id,
                exc_info=True,
            )
        finally:
            if attempt.cancel_timer is not None:
                attempt.cancel_timer.cancel()
            if self._running.get(attempt.key) is attempt:
                del self._running[attempt.key]
            self._slot_free.set()
            if requeued:
                await self.notify_queued([attempt.key])

    async def _ending(self, attempt: _Attempt) -> Callable[[], Awaitable[JobChange]] | None:
        """Waits for the attempt's runner; returns the write that records how it ended (None: the
        attempt is dropped, the job untouched)."""
        job_id = attempt.key[1]
        handle = attempt.handle
        key, token = attempt.key, handle.fencing_token
        try:
            result = await attempt.inner
        except LeaseLost:
            log.info("job %s: lease lost (another worker took it over); attempt dropped", job_id)
            return None
        except asyncio.CancelledError:
            if self._stopping or attempt.lease_lost:
                return None  # a stopping worker hands the job back in `stop`
            if not handle.cancelled.is_set():
                log.error("job %s: its runner's task was cancelled, not by CancelJob", job_id)
                return await self._failed(attempt, RuntimeError("runner task cancelled"))
            result = RunResult(JobOutcome.CANCELLED)
        except Exception as exc:
            return await self._failed(attempt, exc)
        if result.outcome is JobOutcome.SUCCEEDED:
            return lambda: self._store.finish(key, token, job_store.SUCCEEDED)
        if result.outcome is JobOutcome.PAUSED:
            return lambda: self._store.finish(key, token, job_store.PAUSED, pause_reason=result.pause_reason)
        return lambda: self._store.finish(key, token, job_store.CANCELLED)

    async def _failed(
        self, attempt: _Attempt, exc: BaseException
    ) -> Callable[[], Awaitable[JobChange]] | None:
        """A failed attempt: the job fails for good when the error is final or its attempts are used
        up; otherwise, after a backoff, it is queued again to resume from its latest checkpoint."""
        if self._stopping:
            return None  # cut off by this worker's own stop: `stop` hands the job back
        job = attempt.handle.job
        key, token = attempt.key, attempt.handle.fencing_token
        error = attempt_error(exc, job.job_id, job.progress.attempt)
        failures = job.progress.failed_attempts + 1
        max_attempts = job.spec.max_attempts or DEFAULT_MAX_ATTEMPTS
        code = code_pb2.Code.Name(error.code)
        if is_final(error) or failures >= max_attempts:
            if isinstance(exc, Exception) and code == "INTERNAL":
                log.error("job %s failed: %s", job.job_id, error.message, exc_info=exc)
            else:
                log.info("job %s failed (%s): %s", job.job_id, code, error.message)
            return lambda: self._store.finish(key, token, job_store.FAILED, error=error)
        first, cap = RETRY_BACKOFF_SECONDS
        delay = min(cap, first * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
        log.warning(
            "job %s: attempt %d failed (%s: %s); retrying from its latest checkpoint in %.1f s "
            "(failure %d of at most %d)",
            job.job_id,
            job.progress.attempt,
            code,
            error.message,
            delay,
            failures,
            max_attempts,
            exc_info=exc if code == "INTERNAL" else None,
        )
        waits = [asyncio.ensure_future(e.wait()) for e in (attempt.handle.cancelled, self._stop_requested)]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if self._stopping:
            return None
        return lambda: self._store.retry_later(key, token, error)

    # -- heartbeats ----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self._lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            started = time.monotonic()
            try:
                running = {key: a.handle.fencing_token for key, a in self._running.items()}
                held = await self._shielded(
                    self._store.renew_leases(self.owner, self._lease_seconds, running)
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("job lease heartbeat failed; retrying", exc_info=True)
                continue
            for key, attempt in list(self._running.items()):
                if attempt.claimed_at >= started:
                    continue
                lease = held.get(key)
                if lease is None or lease.fencing_token != attempt.handle.fencing_token:
                    if attempt.inner is not None and not attempt.inner.done():
                        log.warning("job %s: lease lost; stopping this worker's attempt", key[1])
                        attempt.lease_lost = True
                        attempt.inner.cancel()
                    continue
                attempt.handle.request_pause(lease.pause_requested)
                if lease.cancel_requested:
                    self._cancel(attempt)
