"""The seam between the job lifecycle (this package) and the per-iteration training work.

The job manager claims a job, builds a `JobHandle` for that attempt and awaits `JobRunner.run(handle)`
in its own task, with the job's tenant as the current identity (so calls to other services act for
that tenant). The runner does the iterations and reports progress through `handle.update_progress`;
everything else (leases, heartbeats, state changes, watchers, pause and cancel) is the manager's.

Contract for a runner:
- Resume from `handle.job.progress` (and its latest checkpoint): a takeover after a crash or a resume
  after a pause starts a new attempt (`progress.attempt`) of the same job.
- At each iteration boundary: if `handle.pause_requested`, return `RunResult(JobOutcome.PAUSED)`
  (after a checkpoint); if `handle.cancelled.is_set()`, return `RunResult(JobOutcome.CANCELLED)`.
  A runner that does not stop within a few seconds of `cancelled` is cancelled (`asyncio` cancel).
- Return `RunResult(JobOutcome.PAUSED, jobs_pb2.PAUSE_REASON_BUDGET_EXHAUSTED)` when the budget runs
  out; `RunResult(JobOutcome.SUCCEEDED)` when every iteration is done.
- Raise to fail the job: a `cohort.platform.errors.CohortError` becomes the job's `error` with its code and
  message; any other exception becomes `INTERNAL` without internals (it is logged here).
- `update_progress` raises `LeaseLost` when another worker took the job over (this worker's fencing
  token is stale): let it propagate; the manager drops the attempt without touching the job.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cohort.api.jobs.v1 import jobs_pb2


class JobOutcome(enum.Enum):
    SUCCEEDED = "succeeded"
    PAUSED = "paused"
    CANCELLED = "cancelled"


@dataclass
class RunResult:
    outcome: JobOutcome
    pause_reason: int = 0
    """A `jobs_pb2.PauseReason` when `outcome` is PAUSED; 0 means `PAUSE_REASON_REQUESTED`."""


class LeaseLost(Exception):
    """This worker's lease on the job is gone (another worker holds a newer fencing token)."""


ProgressWriter = Callable[[jobs_pb2.JobProgress], Awaitable[jobs_pb2.Job]]
"""Persists a job's new progress under the handle's fencing token; returns the stored job."""


class JobHandle:
    """One running attempt of a job, as its runner sees it."""

    def __init__(
        self,
        job: jobs_pb2.Job,
        fencing_token: int,
        write_progress: ProgressWriter | None = None,
    ) -> None:
        """`write_progress` is the manager's fenced write; without one (unit tests of a runner) the
        progress is applied to `job` in memory and its revision bumped."""
        self.job = job
        self.fencing_token = fencing_token
        self.cancelled = asyncio.Event()
        self._pause_requested = False
        self._write_progress = write_progress
        self._write_lock = asyncio.Lock()

    @property
    def pause_requested(self) -> bool:
        """Whether `PauseJob` asked this job to stop at the next iteration boundary."""
        return self._pause_requested

    def request_pause(self, requested: bool = True) -> None:
        """The manager's side: a pause was requested (or withdrawn by a resume before the boundary)."""
        self._pause_requested = requested

    def request_cancel(self) -> None:
        """The manager's side (tests of a runner may call it too): `CancelJob` was called."""
        self.cancelled.set()

    async def update_progress(self, mutate: Callable[[jobs_pb2.JobProgress], None]) -> jobs_pb2.Job:
        """Applies `mutate` to a copy of the latest progress and persists it with a fencing check.

        Bumps the job's revision and notifies watchers; returns (and keeps in `self.job`) the stored
        job. Raises `LeaseLost` when this worker no longer owns the job.
        """
        async with self._write_lock:
            progress = jobs_pb2.JobProgress()
            progress.CopyFrom(self.job.progress)
            mutate(progress)
            if self._write_progress is None:
                job = jobs_pb2.Job()
                job.CopyFrom(self.job)
                job.progress.CopyFrom(progress)
                job.revision += 1
            else:
                job = await self._write_progress(progress)
            self.job = job
            return job


@runtime_checkable
class JobRunner(Protocol):
    """What the job manager runs for each job: `cohort.services.jobs.orchestration.TrainingRunner`."""

    async def run(self, handle: JobHandle) -> RunResult:
        """Runs (or resumes) the job's iterations until done, paused, cancelled or failed."""
        ...

    async def evaluate(self, job: jobs_pb2.Job, request: jobs_pb2.EvaluateJobRequest) -> jobs_pb2.Evaluation:
        """`EvaluateJob`: compares a checkpoint with the starting policy on held-out queries."""
        ...
