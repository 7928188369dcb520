"""The job lifecycle over real gRPC: create, watch, pause/resume, cancel, failures, idempotency.

Jobs run with `LifecycleRunner` below, given to the suite as its `job_runner`: the
thing under test is the lifecycle (states, revisions, leases, watchers), not training, so the runner
only ticks progress. What it does is chosen per job by its display name:
`tick:<seconds>` ticks one iteration per <seconds>; `idle` waits without progress until cancelled;
`ignore-cancel` never returns on its own; `raise-internal` / `raise-domain` fail;
`budget` pauses itself for budget after one iteration.
"""

from __future__ import annotations

import asyncio
import functools
import time

import grpc
import pytest
from google.rpc import code_pb2
from unit.test_job_spec import BAD_SPECS, bad_job

from cohort.api.budget.v1 import budget_pb2, budget_pb2_grpc
from cohort.api.collector.v1 import collector_pb2
from cohort.api.identity.v1 import identity_pb2, identity_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2 as jpb
from cohort.api.jobs.v1 import jobs_pb2_grpc
from cohort.platform.config import Settings
from cohort.platform.errors import FailedPrecondition
from cohort.platform.rpc.client import bad_request, error_info
from cohort.services.jobs import watch as job_watch
from cohort.services.jobs.runner import JobHandle, JobOutcome, RunResult
from cohort.services.jobs.spec import DEFAULT_BATCH_SIZE, DEFAULT_GROUP_SIZE

Job = jpb.Job

# What the runners saw, for assertions the job itself cannot carry.
RUNNER_CANCELLED_BY_TASK: set[str] = set()


class LifecycleRunner:
    def __init__(self, context) -> None:
        self.context = context

    async def run(self, handle: JobHandle) -> RunResult:
        behaviour, _, argument = handle.job.display_name.partition(":")
        job_id = handle.job.job_id
        if behaviour == "raise-internal":
            raise RuntimeError("secret internals: /etc/cohort/password")
        if behaviour == "raise-domain":
            raise FailedPrecondition("the starting policy is gone")
        if behaviour in ("idle", "ignore-cancel"):
            try:
                if behaviour == "ignore-cancel":
                    await asyncio.Event().wait()  # never set: only cancelling the task stops this
                await handle.cancelled.wait()
            except asyncio.CancelledError:
                RUNNER_CANCELLED_BY_TASK.add(job_id)
                raise
            return RunResult(JobOutcome.CANCELLED)
        tick = float(argument or 0.02)
        spec = handle.job.spec
        while handle.job.progress.iteration < spec.iterations:
            if handle.cancelled.is_set():
                return RunResult(JobOutcome.CANCELLED)
            if handle.pause_requested:
                return RunResult(JobOutcome.PAUSED)
            await asyncio.sleep(tick)

            def advance(progress: jpb.JobProgress) -> None:
                progress.iteration += 1
                progress.rollouts_completed += spec.batch_size * spec.group_size

            await handle.update_progress(advance)
            if behaviour == "budget":
                return RunResult(JobOutcome.PAUSED, jpb.PAUSE_REASON_BUDGET_EXHAUSTED)
        return RunResult(JobOutcome.SUCCEEDED)

    async def evaluate(self, job: jpb.Job, request: jpb.EvaluateJobRequest) -> jpb.Evaluation:
        return jpb.Evaluation(
            checkpoint_id=request.checkpoint_id or "latest", iteration=job.progress.iteration
        )


def make_runner(context) -> LifecycleRunner:
    return LifecycleRunner(context)


def job_spec(iterations: int = 5, **fields) -> jpb.JobSpec:
    spec = jpb.JobSpec(
        runtime=collector_pb2.RuntimeSpec(toolbench=collector_pb2.ToolbenchRuntime()),
        dataset=jpb.DatasetSpec(toolbench=jpb.ToolbenchQueries(train_count=10, heldout_count=5)),
        policy=jpb.PolicySource(new_policy=jpb.NewPolicy()),
        iterations=iterations,
    )
    for name, value in fields.items():
        if isinstance(value, int):
            setattr(spec, name, value)
        else:
            getattr(spec, name).CopyFrom(value)
    return spec


def new_job(behaviour: str = "tick:0.02", iterations: int = 5, **fields) -> jpb.Job:
    return jpb.Job(display_name=behaviour, spec=job_spec(iterations, **fields))


@pytest.fixture
def starter(start_suite_for):
    return lambda settings, **overrides: start_suite_for(
        settings.with_overrides(**overrides), ["jobs"], job_runner=make_runner
    )


@pytest.fixture
async def suite(starter, database_settings):
    """On SQLite and on PostgreSQL."""
    return await starter(database_settings)


@pytest.fixture
def start_sqlite(starter, tmp_path):
    """SQLite is enough for these: the store's queries are the same, the lifecycle logic is shared."""
    return functools.partial(starter, Settings(data_dir=tmp_path / "var", auth_cache_seconds=0.0))


@pytest.fixture
async def sqlite_suite(start_sqlite):
    return await start_sqlite()


def jobs(suite) -> jobs_pb2_grpc.JobServiceStub:
    return jobs_pb2_grpc.JobServiceStub(suite.context.channels.channel("jobs"))


async def create(stub, job: jpb.Job, **request) -> jpb.Job:
    return (await stub.CreateJob(jpb.CreateJobRequest(job=job, **request), timeout=10)).job


async def watch_until_terminal(stub, job_id: str, after_revision: int = 0, limit: float = 15) -> list:
    messages = []
    async with asyncio.timeout(limit):
        async for message in stub.WatchJob(jpb.WatchJobRequest(job_id=job_id, after_revision=after_revision)):
            messages.append(message)
    return messages


async def wait_for(stub, job_id: str, predicate, limit: float = 10) -> jpb.Job:
    deadline = time.monotonic() + limit
    while True:
        job = (await stub.GetJob(jpb.GetJobRequest(job_id=job_id), timeout=5)).job
        if predicate(job):
            return job
        assert time.monotonic() < deadline, f"job never reached the expected condition: {job}"
        await asyncio.sleep(0.02)


async def test_full_lifecycle_through_grpc(suite):
    stub = jobs(suite)
    job = await create(stub, new_job(iterations=5))
    assert job.state == Job.STATE_QUEUED and job.revision == 1 and job.tenant_id == "default"
    # Defaults are filled in and stored.
    assert job.spec.group_size == DEFAULT_GROUP_SIZE and job.spec.batch_size == DEFAULT_BATCH_SIZE
    assert job.progress.iterations_total == 5

    messages = await watch_until_terminal(stub, job.job_id)
    revisions = [m.job.revision for m in messages if not m.heartbeat]
    assert revisions == sorted(set(revisions)) and revisions[0] >= 1
    final = messages[-1].job
    assert final.state == Job.STATE_SUCCEEDED
    assert final.progress.iteration == 5
    assert final.progress.rollouts_completed == 5 * DEFAULT_BATCH_SIZE * DEFAULT_GROUP_SIZE
    assert final.progress.attempt == 1
    assert final.HasField("start_time") and final.HasField("end_time")
    iterations_seen = [m.job.progress.iteration for m in messages]
    assert iterations_seen == sorted(iterations_seen) and len(set(iterations_seen)) >= 5

    got = (await stub.GetJob(jpb.GetJobRequest(job_id=job.job_id), timeout=5)).job
    assert got == final
    listed = await stub.ListJobs(jpb.ListJobsRequest(states=[Job.STATE_SUCCEEDED]), timeout=5)
    assert [j.job_id for j in listed.jobs] == [job.job_id]
    assert not (await stub.ListJobs(jpb.ListJobsRequest(states=[Job.STATE_RUNNING]), timeout=5)).jobs

    evaluation = (
        await stub.EvaluateJob(jpb.EvaluateJobRequest(job_id=job.job_id, checkpoint_id="c1"), timeout=5)
    ).evaluation
    assert evaluation.checkpoint_id == "c1" and evaluation.iteration == 5


async def test_list_is_paged_newest_first_and_tenant_scoped(sqlite_suite):
    stub = jobs(sqlite_suite)
    created = [await create(stub, new_job("idle"), request_id=f"r{i}") for i in range(5)]
    pages, token = [], ""
    while True:
        page = await stub.ListJobs(jpb.ListJobsRequest(page_size=2, page_token=token), timeout=5)
        pages.append([j.job_id for j in page.jobs])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == [j.job_id for j in reversed(created)]

    keys = identity_pb2_grpc.ApiKeyServiceStub(sqlite_suite.context.channels.channel("jobs"))
    other = await keys.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(tenant_id="other", display_name="o"), timeout=5
    )
    as_other = (("authorization", f"Bearer {other.secret}"),)
    assert not (await stub.ListJobs(jpb.ListJobsRequest(), metadata=as_other, timeout=5)).jobs
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetJob(jpb.GetJobRequest(job_id=created[0].job_id), metadata=as_other, timeout=5)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    for job in created:
        await stub.CancelJob(jpb.CancelJobRequest(job_id=job.job_id), timeout=5)


async def test_create_is_idempotent_by_request_id(sqlite_suite):
    stub = jobs(sqlite_suite)
    first = await create(stub, new_job("idle"), request_id="create-1")
    again = await create(stub, new_job("idle"), request_id="create-1")
    assert again.job_id == first.job_id and again.revision == first.revision
    assert len((await stub.ListJobs(jpb.ListJobsRequest(), timeout=5)).jobs) == 1

    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await create(stub, new_job("idle", iterations=7), request_id="create-1")
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in reused.value.details()

    named = await create(stub, jpb.Job(job_id="my-job", display_name="idle", spec=job_spec()))
    assert named.job_id == "my-job"
    with pytest.raises(grpc.aio.AioRpcError) as duplicate:
        await create(stub, jpb.Job(job_id="my-job", display_name="idle", spec=job_spec()))
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
    for job_id in (first.job_id, "my-job"):
        await stub.CancelJob(jpb.CancelJobRequest(job_id=job_id), timeout=5)


async def test_watch_resumes_after_a_revision(suite):
    stub = jobs(suite)
    job = await create(stub, new_job("tick:0.01", iterations=6))
    everything = await watch_until_terminal(stub, job.job_id)
    final = everything[-1].job
    resumed = await watch_until_terminal(stub, job.job_id, after_revision=final.revision - 2)
    # The current snapshot is newer than the resume point, so it comes first, then the stream ends.
    assert [m.job.revision for m in resumed] == [final.revision]
    assert await watch_until_terminal(stub, job.job_id, after_revision=final.revision, limit=3) == []

    running = await create(stub, new_job("tick:0.05", iterations=4))
    current = (await wait_for(stub, running.job_id, lambda j: j.progress.iteration >= 1)).revision
    resumed = await watch_until_terminal(stub, running.job_id, after_revision=current)
    assert resumed and all(m.job.revision > current for m in resumed if not m.heartbeat)
    assert resumed[-1].job.state == Job.STATE_SUCCEEDED


async def test_idle_watch_gets_heartbeats(sqlite_suite, monkeypatch):
    monkeypatch.setattr(job_watch, "HEARTBEAT_SECONDS", 0.2)
    stub = jobs(sqlite_suite)
    job = await create(stub, new_job("idle"))
    await wait_for(stub, job.job_id, lambda j: j.state == Job.STATE_RUNNING)
    stream = stub.WatchJob(jpb.WatchJobRequest(job_id=job.job_id))
    first = await asyncio.wait_for(stream.read(), 5)
    assert not first.heartbeat and first.job.state == Job.STATE_RUNNING
    beats = [await asyncio.wait_for(stream.read(), 5) for _ in range(2)]
    assert all(b.heartbeat and b.job.revision == first.job.revision for b in beats)
    await stub.CancelJob(jpb.CancelJobRequest(job_id=job.job_id), timeout=5)
    rest = [m async for m in stream]
    assert rest[-1].job.state == Job.STATE_CANCELLED and not rest[-1].heartbeat


async def test_cancel_is_terminal_within_five_seconds_even_if_the_runner_ignores_it(sqlite_suite):
    stub = jobs(sqlite_suite)
    job = await create(stub, new_job("ignore-cancel"))
    await wait_for(stub, job.job_id, lambda j: j.state == Job.STATE_RUNNING)
    started = time.monotonic()
    cancelling = (await stub.CancelJob(jpb.CancelJobRequest(job_id=job.job_id), timeout=5)).job
    assert cancelling.state == Job.STATE_CANCELLING
    final = await wait_for(stub, job.job_id, lambda j: j.state == Job.STATE_CANCELLED, limit=5)
    assert time.monotonic() - started < 5
    assert job.job_id in RUNNER_CANCELLED_BY_TASK  # the runner's task itself was cancelled
    assert final.HasField("end_time")


async def test_cancel_of_a_cooperative_runner_and_of_a_queued_job(sqlite_suite):
    stub = jobs(sqlite_suite)
    job = await create(stub, new_job("idle"))
    await wait_for(stub, job.job_id, lambda j: j.state == Job.STATE_RUNNING)
    await stub.CancelJob(jpb.CancelJobRequest(job_id=job.job_id), timeout=5)
    await wait_for(stub, job.job_id, lambda j: j.state == Job.STATE_CANCELLED, limit=2)
    assert job.job_id not in RUNNER_CANCELLED_BY_TASK


async def test_pause_at_the_iteration_boundary_then_resume(suite):
    stub = jobs(suite)
    job = await create(stub, new_job("tick:0.05", iterations=8))
    await wait_for(stub, job.job_id, lambda j: j.progress.iteration >= 2)
    requested = (await stub.PauseJob(jpb.PauseJobRequest(job_id=job.job_id), timeout=5)).job
    assert requested.state in (Job.STATE_RUNNING, Job.STATE_PAUSED)
    paused = await wait_for(stub, job.job_id, lambda j: j.state == Job.STATE_PAUSED)
    assert paused.pause_reason == jpb.PAUSE_REASON_REQUESTED
    assert 2 <= paused.progress.iteration < 8
    # Pausing a paused job changes nothing.
    again = (await stub.PauseJob(jpb.PauseJobRequest(job_id=job.job_id), timeout=5)).job
    assert again.revision == paused.revision

    resumed = (await stub.ResumeJob(jpb.ResumeJobRequest(job_id=job.job_id), timeout=5)).job
    assert resumed.state in (Job.STATE_QUEUED, Job.STATE_RUNNING)
    assert resumed.pause_reason == jpb.PAUSE_REASON_UNSPECIFIED
    final = await wait_for(stub, job.job_id, lambda j: j.state == Job.STATE_SUCCEEDED)
    assert final.progress.iteration == 8 and final.progress.attempt == 2


async def test_pause_of_a_queued_job_is_immediate(start_sqlite):
    suite = await start_sqlite(max_running_jobs=1)
    stub = jobs(suite)
    blocker = await create(stub, new_job("idle"))
    await wait_for(stub, blocker.job_id, lambda j: j.state == Job.STATE_RUNNING)
    queued = await create(stub, new_job("tick:0.01", iterations=2))
    paused = (await stub.PauseJob(jpb.PauseJobRequest(job_id=queued.job_id), timeout=5)).job
    assert paused.state == Job.STATE_PAUSED and paused.pause_reason == jpb.PAUSE_REASON_REQUESTED
    await stub.CancelJob(jpb.CancelJobRequest(job_id=blocker.job_id), timeout=5)
    await stub.ResumeJob(jpb.ResumeJobRequest(job_id=queued.job_id), timeout=5)
    done = await wait_for(stub, queued.job_id, lambda j: j.state == Job.STATE_SUCCEEDED)
    assert done.progress.attempt == 1


async def test_a_runner_pausing_for_budget(sqlite_suite):
    stub = jobs(sqlite_suite)
    job = await create(stub, new_job("budget", iterations=3))
    paused = await wait_for(stub, job.job_id, lambda j: j.state == Job.STATE_PAUSED)
    assert paused.pause_reason == jpb.PAUSE_REASON_BUDGET_EXHAUSTED and paused.progress.iteration == 1


async def test_illegal_transitions_and_unknown_jobs(sqlite_suite):
    stub = jobs(sqlite_suite)
    done = await create(stub, new_job("tick:0.01", iterations=1))
    await wait_for(stub, done.job_id, lambda j: j.state == Job.STATE_SUCCEEDED)
    running = await create(stub, new_job("idle"))
    await wait_for(stub, running.job_id, lambda j: j.state == Job.STATE_RUNNING)

    for call, request, state in (
        (stub.PauseJob, jpb.PauseJobRequest(job_id=done.job_id), "SUCCEEDED"),
        (stub.ResumeJob, jpb.ResumeJobRequest(job_id=done.job_id), "SUCCEEDED"),
        (stub.CancelJob, jpb.CancelJobRequest(job_id=done.job_id), "SUCCEEDED"),
        (stub.ResumeJob, jpb.ResumeJobRequest(job_id=running.job_id), "RUNNING"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(request, timeout=5)
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert state in failure.value.details()
    unchanged = (await stub.GetJob(jpb.GetJobRequest(job_id=done.job_id), timeout=5)).job
    assert unchanged.state == Job.STATE_SUCCEEDED

    for call, request in (
        (stub.GetJob, jpb.GetJobRequest(job_id="nope")),
        (stub.PauseJob, jpb.PauseJobRequest(job_id="nope")),
        (stub.ResumeJob, jpb.ResumeJobRequest(job_id="nope")),
        (stub.CancelJob, jpb.CancelJobRequest(job_id="nope")),
        (stub.EvaluateJob, jpb.EvaluateJobRequest(job_id="nope")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(request, timeout=5)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await watch_until_terminal(stub, "nope")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListJobs(jpb.ListJobsRequest(states=[Job.STATE_UNSPECIFIED]), timeout=5)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    await stub.CancelJob(jpb.CancelJobRequest(job_id=running.job_id), timeout=5)


async def test_runner_errors_fail_the_job(sqlite_suite):
    stub = jobs(sqlite_suite)
    internal = await create(stub, new_job("raise-internal"))
    domain = await create(stub, new_job("raise-domain"))
    failed = await wait_for(stub, internal.job_id, lambda j: j.state == Job.STATE_FAILED)
    assert failed.error.code == code_pb2.INTERNAL
    assert "secret" not in failed.error.message and "password" not in failed.error.message
    failed = await wait_for(stub, domain.job_id, lambda j: j.state == Job.STATE_FAILED)
    assert failed.error.code == code_pb2.FAILED_PRECONDITION
    assert "starting policy is gone" in failed.error.message


class FakeBudget(budget_pb2_grpc.BudgetServiceServicer):
    def __init__(self) -> None:
        self.remaining = 10**9
        self.requests: list[budget_pb2.EstimateRequest] = []

    async def Estimate(self, request, context):
        self.requests.append(request)
        # One micro-USD per token.
        cost = sum(u.input_tokens + u.output_tokens for u in request.usage) + request.cost_micro_usd
        return budget_pb2.EstimateResponse(
            cost_micro_usd=cost,
            remaining_micro_usd=self.remaining,
            fits=cost <= self.remaining,
            limiting_scope=budget_pb2.LIMIT_SCOPE_TENANT_MONTHLY if cost > self.remaining else 0,
        )


async def test_budget_preflight_refuses_a_job_that_cannot_fit(start_sqlite):
    budget = FakeBudget()
    server = grpc.aio.server()
    budget_pb2_grpc.add_BudgetServiceServicer_to_server(budget, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    suite = await start_sqlite(addresses={"budget": f"127.0.0.1:{port}"})
    try:
        stub = jobs(suite)
        priced = collector_pb2.RuntimeSpec(
            toolbench=collector_pb2.ToolbenchRuntime(simulated_tokens_per_step=10, simulated_model="sim")
        )
        spec = job_spec(iterations=2, runtime=priced, max_steps=5, batch_size=4)
        # 2 iterations x 4 queries x 8 rollouts + 1 evaluation x 5 held-out x 2 policies x 2 rollouts
        # = 84 rollouts x 5 steps x 10 tokens
        expected_cost = 84 * 5 * 10
        budget.remaining = expected_cost - 1
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await create(stub, jpb.Job(display_name="idle", spec=spec))
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (
            str(expected_cost) in failure.value.details()
            and str(expected_cost - 1) in failure.value.details()
        )

        budget.remaining = 10**9
        limited = jpb.JobSpec()
        limited.CopyFrom(spec)
        limited.budget.limit_micro_usd = 100
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await create(stub, jpb.Job(display_name="idle", spec=limited))
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert str(expected_cost) in failure.value.details() and "100" in failure.value.details()
        assert error_info(failure.value).reason == "BUDGET_ESTIMATE_EXCEEDS_LIMIT"
        assert not (await stub.ListJobs(jpb.ListJobsRequest(), timeout=5)).jobs

        fits = await create(stub, jpb.Job(display_name="tick:0.01", spec=spec))
        assert fits.state == Job.STATE_QUEUED and len(budget.requests) == 3
        assert budget.requests[-1].usage[0].model == "sim"
    finally:
        await server.stop(0)


async def test_every_bad_spec_field_is_rejected_and_nothing_is_stored(sqlite_suite):
    stub = jobs(sqlite_suite)
    for case, (_, field) in sorted(BAD_SPECS.items()):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await create(stub, bad_job(case), request_id=f"bad-{len(field)}")
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        assert [v.field for v in bad_request(failure.value).field_violations] == [field], case
    assert not (await stub.ListJobs(jpb.ListJobsRequest(), timeout=5)).jobs
