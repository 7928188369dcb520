"""The job manager's domain: creating jobs (validation, budget pre-flight, idempotency), reading and
watching them, pause/resume/cancel, evaluation; the scheduler runs them.

Every change is committed first, then published to watchers and to the worker running the job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from cohort.api.budget.v1 import budget_pb2, budget_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2
from cohort.platform.config import Settings
from cohort.platform.context import current_tenant, require_identity
from cohort.platform.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from cohort.platform.rpc.client import ChannelPool
from cohort.platform.storage import idempotency
from cohort.platform.storage.engine import Database
from cohort.services.collector.runtimes import authorize_python_entry_point
from cohort.services.jobs import watch as job_watch
from cohort.services.jobs.runner import JobRunner
from cohort.services.jobs.scheduler import RedisWakeups, Scheduler, Wakeups
from cohort.services.jobs.spec import RolloutCeiling, planned_rollouts, rollout_ceiling, validate_new_job
from cohort.services.jobs.store import TERMINAL_STATES, JobChange, JobStore
from cohort.services.jobs.watch import JobNotifier, RecentSnapshots, RedisJobNotifier

SCOPE = "cohort.api.jobs.v1.JobService."
BUDGET_ESTIMATE_TIMEOUT_SECONDS = 5.0


def planned_estimate(spec: jobs_pb2.JobSpec) -> tuple[budget_pb2.EstimateRequest, RolloutCeiling] | None:
    """What the budget pre-flight asks `Estimate` to price: every rollout of the job (training, and
    both policies' at every evaluation) at its per-rollout ceiling, an upper bound rather than a
    guess; None when the spec declares no ceiling and the runtime's cost cannot be told before it
    runs (the job then sizes its reservations from what it measures)."""
    ceiling = rollout_ceiling(spec)
    if ceiling is None:
        return None
    rollouts = planned_rollouts(spec)
    request = budget_pb2.EstimateRequest(
        usage=ceiling.usage(rollouts), cost_micro_usd=rollouts * ceiling.cost_micro_usd
    )
    return request, ceiling


class JobService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        runner: JobRunner,
        channels: Callable[[], ChannelPool],
        *,
        owned_only: bool = False,
    ) -> None:
        """`channels` is read at call time: the process's channels exist only once every server is bound.
        `owned_only`: this process runs only the jobs created through it (a CLI command's suite),
        never other jobs of the database, which a command that ends would abandon midway."""
        self._settings = settings
        self._database = database
        self._store = JobStore(database)
        self._runner = runner
        self._channels = channels
        self._redis = None
        self.notifier: JobNotifier = JobNotifier()
        self._recent = RecentSnapshots()
        self.scheduler: Scheduler | None = None
        self._owned_only = owned_only
        self._started = False

    @property
    def store(self) -> JobStore:
        return self._store

    async def start(self, ready: Callable[[], bool] = lambda: True) -> None:
        settings = self._settings
        wakeups = Wakeups()
        if settings.redis_url:
            from cohort.platform.redis_client import connect_redis

            self._redis = await connect_redis(settings.redis_url)
            prefix = f"cohort:{settings.database_schema or 'public'}:jobs"
            self.notifier = RedisJobNotifier(self._redis, f"{prefix}:changes")
            wakeups = RedisWakeups(self._redis, f"{prefix}:queue")
        self.notifier.add_listener(lambda change: self._recent.offer(change.job))
        await self.notifier.start()
        self.scheduler = Scheduler(
            self._store,
            self.notifier,
            self._runner,
            lease_seconds=settings.job_lease_seconds,
            max_running_jobs=settings.max_running_jobs,
            wakeups=wakeups,
            lock_dir=settings.data_dir if settings.is_embedded and not settings.redis_url else None,
            owned_only=self._owned_only,
        )
        await self.scheduler.start(ready)
        self._started = True

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        await self.notifier.stop()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def _published(self, change: JobChange, *, wake: bool = False) -> None:
        await self.notifier.publish(change)
        if wake and self.scheduler is not None:
            await self.scheduler.notify_queued([change.key])

    # -- create --------------------------------------------------------------------------------

    async def create(self, request: jobs_pb2.CreateJobRequest) -> jobs_pb2.CreateJobResponse:
        scope = SCOPE + "CreateJob"
        previous = await idempotency.find_answer(self._database, scope, request, jobs_pb2.CreateJobResponse)
        if previous is not None:
            if self.scheduler is not None:
                self.scheduler.adopt((current_tenant(), previous.job.job_id))
            return previous
        if not request.HasField("job"):
            raise InvalidArgument("job", "is required")
        new_job = validate_new_job(request.job, self._settings)
        if new_job.spec.runtime.WhichOneof("kind") == "python":
            # The job's rollouts reach the collector with the service credential, which may run any
            # entry point: the creator's right to run this one is checked here, once, for good.
            authorize_python_entry_point(
                new_job.spec.runtime.python.entry_point,
                require_identity(),
                self._settings.python_runtime_allowlist,
                field="job.spec.runtime.python.entry_point",
            )
        await self._check_budget(new_job.spec)
        tenant = current_tenant()
        created: list[JobChange] = []

        async def work(session) -> jobs_pb2.CreateJobResponse:
            change = await self._store.create(
                session, tenant, new_job.job_id, new_job.display_name, new_job.spec
            )
            created.append(change)
            return jobs_pb2.CreateJobResponse(job=change.job)

        async with self._store.writer_turn():
            response = await idempotency.run_once(
                self._database, scope, request, jobs_pb2.CreateJobResponse, work
            )
        if self.scheduler is not None:
            self.scheduler.adopt((tenant, response.job.job_id))
        if created and created[0].job.revision == response.job.revision:
            await self._published(created[0], wake=True)
        return response

    async def _check_budget(self, spec: jobs_pb2.JobSpec) -> None:
        planned = planned_estimate(spec)
        if planned is None:
            return
        request, ceiling = planned
        stub = self._channels().stub("budget", budget_pb2_grpc.BudgetServiceStub)
        try:
            estimate = await stub.Estimate(request, timeout=BUDGET_ESTIMATE_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(
                    ceiling.model_field, f"the budget service cannot price it: {exc.details()}"
                ) from exc
            raise Unavailable(f"the budget pre-flight failed: {exc.code().name}: {exc.details()}") from exc
        limit = spec.budget.limit_micro_usd
        metadata = {"estimate_micro_usd": str(estimate.cost_micro_usd)}
        if limit and estimate.cost_micro_usd > limit:
            raise FailedPrecondition(
                f"the job's estimated cost, {estimate.cost_micro_usd} micro-USD, exceeds its budget limit "
                f"job.spec.budget.limit_micro_usd = {limit} micro-USD",
                reason="BUDGET_ESTIMATE_EXCEEDS_LIMIT",
                # A new job has spent nothing: all of its limit remains.
                metadata={
                    **metadata,
                    "limit_micro_usd": str(limit),
                    "remaining_micro_usd": str(limit),
                    "scope": "LIMIT_SCOPE_JOB",
                },
            )
        if not estimate.fits:
            scope = (
                budget_pb2.LimitScope.Name(estimate.limiting_scope) if estimate.limiting_scope else "budget"
            )
            raise ResourceExhausted(
                f"the job's estimated cost, {estimate.cost_micro_usd} micro-USD, does not fit the "
                f"{estimate.remaining_micro_usd} micro-USD left under the {scope} limit",
                reason="BUDGET_ESTIMATE_DOES_NOT_FIT",
                metadata={
                    **metadata,
                    "remaining_micro_usd": str(estimate.remaining_micro_usd),
                    "scope": scope,
                },
            )

    # -- read ----------------------------------------------------------------------------------

    async def get(self, job_id: str) -> jobs_pb2.Job:
        if not job_id:
            raise InvalidArgument("job_id", "is required")
        return await self._snapshot(current_tenant(), job_id)

    async def _snapshot(self, tenant_id: str, job_id: str) -> jobs_pb2.Job:
        """The job's recent snapshot from the fan-out, else read from the table (and kept)."""
        recent = self._recent.get(tenant_id, job_id)
        if recent is not None:
            return recent
        job = await self._store.get(tenant_id, job_id)
        self._recent.offer(job)
        return job

    async def list(
        self, states: Sequence[int], page_size: int, page_token: str
    ) -> tuple[list[jobs_pb2.Job], str]:
        for i, state in enumerate(states):
            if state == jobs_pb2.Job.STATE_UNSPECIFIED or state not in jobs_pb2.Job.State.values():
                raise InvalidArgument(f"states[{i}]", f"unknown job state {state}")
        return await self._store.list(current_tenant(), states, page_size, page_token)

    async def watch(self, job_id: str, after_revision: int) -> AsyncIterator[tuple[jobs_pb2.Job, bool]]:
        """(snapshot, heartbeat) pairs: the current snapshot (when newer than `after_revision`), then
        one per change, a heartbeat after `watch.HEARTBEAT_SECONDS` of silence; ends after a terminal
        snapshot (at once for a finished job already seen)."""
        if not job_id:
            raise InvalidArgument("job_id", "is required")
        if after_revision < 0:
            raise InvalidArgument("after_revision", "must be >= 0")
        tenant = current_tenant()
        # Subscribe before reading, so a change committed in between is not missed.
        with self.notifier.subscribe(tenant, job_id) as subscription:
            # A recent snapshot is as new as any change published before the subscription; one
            # committed but not yet published will be delivered to it.
            latest = await self._snapshot(tenant, job_id)
            sent = after_revision
            if latest.revision > sent:
                yield latest, False
                sent = latest.revision
            if latest.state in TERMINAL_STATES:
                return
            while True:
                job = await subscription.next(job_watch.HEARTBEAT_SECONDS)
                heartbeat = False
                if job is None:
                    # Idle: the table is the truth, in case a fan-out message was lost.
                    job = await self._store.get(tenant, job_id)
                    heartbeat = job.revision <= sent
                elif job.revision <= sent:
                    continue
                if not heartbeat:
                    sent = job.revision
                yield job, heartbeat
                if job.state in TERMINAL_STATES:
                    return

    # -- lifecycle -----------------------------------------------------------------------------

    async def _transition(self, name: str, request, method) -> jobs_pb2.Job:
        if not request.job_id:
            raise InvalidArgument("job_id", "is required")
        response_type = getattr(jobs_pb2, f"{name}Response")
        tenant = current_tenant()
        changes: list[JobChange] = []

        async def work(session):
            change = await method(session, tenant, request.job_id)
            changes.append(change)
            return response_type(job=change.job)

        async with self._store.writer_turn():
            response = await idempotency.run_once(self._database, SCOPE + name, request, response_type, work)
        if changes and changes[0].job.revision == response.job.revision:
            await self._published(changes[0], wake=changes[0].job.state == jobs_pb2.Job.STATE_QUEUED)
        return response.job

    async def pause(self, request: jobs_pb2.PauseJobRequest) -> jobs_pb2.Job:
        return await self._transition("PauseJob", request, self._store.request_pause)

    async def resume(self, request: jobs_pb2.ResumeJobRequest) -> jobs_pb2.Job:
        return await self._transition("ResumeJob", request, self._store.resume)

    async def cancel(self, request: jobs_pb2.CancelJobRequest) -> jobs_pb2.Job:
        return await self._transition("CancelJob", request, self._store.request_cancel)

    async def relaunch(self, request: jobs_pb2.RelaunchJobRequest) -> jobs_pb2.Job:
        return await self._transition("RelaunchJob", request, self._store.relaunch)

    async def evaluate(self, request: jobs_pb2.EvaluateJobRequest) -> jobs_pb2.Evaluation:
        scope = SCOPE + "EvaluateJob"
        if request.seed < 0:
            raise InvalidArgument("seed", f"must be >= 0 (0 means the job's seed), got {request.seed}")
        job = await self.get(request.job_id)
        previous = await idempotency.find_answer(self._database, scope, request, jobs_pb2.EvaluateJobResponse)
        if previous is not None:
            return previous.evaluation
        evaluation = await self._runner.evaluate(job, request)

        async def answer(session) -> jobs_pb2.EvaluateJobResponse:
            return jobs_pb2.EvaluateJobResponse(evaluation=evaluation)

        async with self._store.writer_turn():
            response = await idempotency.run_once(
                self._database, scope, request, jobs_pb2.EvaluateJobResponse, answer
            )
        return response.evaluation
