"""The budget is exact: a job's ledger equals the sum of the costs of every trajectory it produced,
training and evaluation, read back through the collector's search and the budget's `GetUsage`; on
SQLite, PostgreSQL, and Redis + PostgreSQL. Also: a commit past the limit pauses the job, a taken
over job frees what its crashed attempt held, and every runtime has a pre-flight estimate when its
spec declares per-rollout ceilings.
"""

from __future__ import annotations

import grpc
import pytest
from integration.test_training_jobs import stub, wait_for

from cohort.api.budget.v1 import budget_pb2, budget_pb2_grpc
from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2
from cohort.platform.context import Identity, current_identity
from cohort.platform.rpc.client import bad_request, error_info
from cohort.sdk.runtime import AgentContext, AgentResult, Task
from cohort.services.jobs.runner import JobHandle, JobOutcome
from cohort.services.suite import start_suite

pytestmark = pytest.mark.timeout(240)

Job = jobs_pb2.Job
TOOLS = ("search", "answer")


async def costly_agent(task: Task, context: AgentContext) -> AgentResult:
    """One decision, then gpt-4o usage that differs from rollout to rollout (by seed)."""
    choice = await context.decide("next_tool", {"bias": 1.0}, options=TOOLS)
    context.report_usage(1_000 + 37 * (context.seed % 11), 50 + 13 * (context.seed % 7), model="gpt-4o")
    return AgentResult(success=choice.option == "answer", final_result=choice.option)


def costly_job(*, iterations: int = 2, **budget) -> Job:
    queries = [collector_pb2.Query(query_id=f"q{i}", text=f"question {i}") for i in range(6)]
    return Job(
        display_name="costly",
        spec=jobs_pb2.JobSpec(
            runtime=collector_pb2.RuntimeSpec(
                python=collector_pb2.PythonRuntime(entry_point=f"{__name__}:costly_agent")
            ),
            dataset=jobs_pb2.DatasetSpec(
                inline=jobs_pb2.InlineQueries(train=queries[:4], heldout=queries[4:])
            ),
            policy=jobs_pb2.PolicySource(
                new_policy=jobs_pb2.NewPolicy(
                    heads=[trainer_pb2.DecisionHead(name="next_tool", options=list(TOOLS))]
                )
            ),
            group_size=3,
            batch_size=2,
            iterations=iterations,
            checkpoint_interval=1,
            evaluation_interval=iterations,
            seed=11,
            budget=jobs_pb2.BudgetSpec(**budget),
        ),
    )


@pytest.fixture(params=["sql", "redis"])
async def suite(request, database_settings):
    settings = database_settings
    if request.param == "redis":
        if not settings.database_url:
            pytest.skip("the Redis budget gate runs with PostgreSQL only")
        settings = settings.with_overrides(redis_url=request.getfixturevalue("redis_url"))
    started = await start_suite(settings, ["all"], ephemeral_ports=True)
    try:
        yield started
    finally:
        await started.stop(0)


async def trajectory_costs(suite, job_id: str) -> dict[str, list[int]]:
    """Purpose -> the cost of every stored trajectory of the job (superseded ones too)."""
    collector = stub(suite, "collector", collector_pb2_grpc.CollectorServiceStub)
    costs: dict[str, list[int]] = {}
    token = ""
    while True:
        page = await collector.SearchTrajectories(
            collector_pb2.SearchTrajectoriesRequest(
                filter=collector_pb2.TrajectoryFilter(job_id=job_id, include_superseded=True),
                page_size=1000,
                page_token=token,
            )
        )
        for hit in page.hits:
            costs.setdefault(hit.trajectory.labels["purpose"], []).append(hit.trajectory.cost_micro_usd)
        token = page.next_page_token
        if not token:
            return costs


async def job_usage(suite, job_id: str) -> budget_pb2.GetUsageResponse:
    budget = stub(suite, "budget", budget_pb2_grpc.BudgetServiceStub)
    return await budget.GetUsage(budget_pb2.GetUsageRequest(job_id=job_id))


async def test_the_ledger_equals_the_cost_of_every_trajectory_of_the_job(suite):
    jobs = stub(suite, "jobs", jobs_pb2_grpc.JobServiceStub)
    # A python agent declares no ceiling: nothing tells its first iteration's cost beforehand.
    job = (await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=costly_job()))).job
    done = await wait_for(jobs, job.job_id, {Job.STATE_SUCCEEDED, Job.STATE_FAILED, Job.STATE_PAUSED})
    assert done.state == Job.STATE_SUCCEEDED, done.error.message
    assert len(done.progress.evaluations) == 1

    costs = await trajectory_costs(suite, job.job_id)
    assert len(costs["training"]) == 2 * 2 * 3
    assert len(costs["evaluation"]) == 2 * 2 * 2  # 2 held-out queries x 2 policies x 2 rollouts
    assert len(set(costs["training"])) > 1 and min(costs["training"]) > 0
    usage = await job_usage(suite, job.job_id)
    assert usage.job.spent_micro_usd == sum(costs["training"]) + sum(costs["evaluation"])
    assert usage.tenant.spent_micro_usd == usage.job.spent_micro_usd
    assert usage.job.reserved_micro_usd == 0 and usage.tenant.reserved_micro_usd == 0

    # An evaluation on demand is booked too; repeating it replays its rollouts and its booking.
    for _ in range(2):
        await jobs.EvaluateJob(jobs_pb2.EvaluateJobRequest(job_id=job.job_id), timeout=120)
    costs = await trajectory_costs(suite, job.job_id)
    assert len(costs["evaluation"]) == 2 * 8
    usage = await job_usage(suite, job.job_id)
    assert usage.job.spent_micro_usd == sum(costs["training"]) + sum(costs["evaluation"])
    assert usage.job.reserved_micro_usd == 0


async def test_a_commit_past_the_jobs_limit_pauses_the_job_with_budget_exhausted(suite):
    jobs = stub(suite, "jobs", jobs_pb2_grpc.JobServiceStub)
    job = (
        await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=costly_job(iterations=3, limit_micro_usd=100)))
    ).job
    paused = await wait_for(jobs, job.job_id, {Job.STATE_SUCCEEDED, Job.STATE_FAILED, Job.STATE_PAUSED})
    assert paused.state == Job.STATE_PAUSED, paused.error.message
    assert paused.pause_reason == jobs_pb2.PAUSE_REASON_BUDGET_EXHAUSTED
    # The first iteration's cost could not be told beforehand: it ran, was booked whole, and
    # nothing started after it.
    assert paused.progress.iteration == 1
    costs = await trajectory_costs(suite, job.job_id)
    usage = await job_usage(suite, job.job_id)
    assert usage.job.spent_micro_usd == sum(costs["training"]) > 100
    assert usage.job.limit_micro_usd == 100 and usage.job.remaining_micro_usd == 0
    assert usage.job.reserved_micro_usd == 0


async def test_a_taken_over_job_releases_what_its_crashed_attempt_held(suite):
    from cohort.services.jobs.orchestration import (
        TrainingLoop,
        TrainingRunner,
        TrainingServices,
        TrainingState,
    )

    current_identity.set(Identity(tenant_id="default", key_id="test", is_admin=True))
    job = costly_job(iterations=1, max_rollout_cost_micro_usd=50_000)
    job.job_id, job.tenant_id, job.state = "job-crashed", "default", Job.STATE_RUNNING
    # Attempt 1 reserved its first iteration and died before committing it.
    crashed = TrainingLoop(
        TrainingServices.from_channels(suite.context.channels), job.job_id, job.spec, attempt=1
    )
    held = await crashed.reserve(TrainingState())
    assert held.amount_micro_usd == 2 * 3 * 50_000  # sized from the declared ceiling
    evaluation_hold = crashed._evaluation_hold
    assert evaluation_hold.amount_micro_usd == 2 * 2 * 2 * 50_000
    reserved = (await job_usage(suite, job.job_id)).job.reserved_micro_usd
    assert reserved == held.amount_micro_usd + evaluation_hold.amount_micro_usd

    job.progress.attempt = 2
    result = await TrainingRunner(suite.context).run(JobHandle(job, fencing_token=2))
    assert result.outcome is JobOutcome.SUCCEEDED
    usage = await job_usage(suite, job.job_id)
    assert usage.job.reserved_micro_usd == 0  # not held until the crashed attempt's ttl
    costs = await trajectory_costs(suite, job.job_id)
    assert usage.job.spent_micro_usd == sum(costs["training"]) + sum(costs["evaluation"])
    budget = stub(suite, "budget", budget_pb2_grpc.BudgetServiceStub)
    for hold in (held, evaluation_hold):
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await budget.Commit(
                budget_pb2.CommitRequest(reservation_id=hold.reservation_id, cost_micro_usd=1)
            )
        assert error_info(late.value).metadata["state"] == "RESERVATION_STATE_RELEASED"


async def test_preflight_estimates_every_runtime_from_declared_ceilings(suite):
    jobs = stub(suite, "jobs", jobs_pb2_grpc.JobServiceStub)
    budget = stub(suite, "budget", budget_pb2_grpc.BudgetServiceStub)
    await budget.SetLimit(
        budget_pb2.SetLimitRequest(scope=budget_pb2.LIMIT_SCOPE_TENANT_MONTHLY, limit_micro_usd=1_000_000)
    )
    # 2 iterations x 2 queries x 3 rollouts + 1 evaluation x 2 held-out x 2 policies x 2 rollouts
    rollouts = 12 + 8
    grpc_runtime = collector_pb2.RuntimeSpec(grpc=collector_pb2.GrpcRuntime(address="127.0.0.1:1"))
    for runtime in ("python", "grpc"):
        job = costly_job(max_rollout_cost_micro_usd=60_000)  # 20 x 60,000 = $1.20 > $1 left
        if runtime == "grpc":
            job.spec.runtime.CopyFrom(grpc_runtime)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=job))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, runtime
        info = error_info(refused.value)
        assert info.reason == "BUDGET_ESTIMATE_DOES_NOT_FIT"
        assert info.metadata["estimate_micro_usd"] == str(rollouts * 60_000)
        assert info.metadata["remaining_micro_usd"] == "1000000"
        assert str(rollouts * 60_000) in refused.value.details()

    # Tokens priced as output tokens of the pricing model: gpt-4o, $10 per million.
    job = costly_job(max_rollout_tokens=2_000, pricing_model="gpt-4o", limit_micro_usd=300_000)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=job))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(refused.value)
    assert info.reason == "BUDGET_ESTIMATE_EXCEEDS_LIMIT"
    assert info.metadata["estimate_micro_usd"] == str(rollouts * 20_000)
    assert info.metadata["remaining_micro_usd"] == "300000"

    fits = costly_job(max_rollout_tokens=2_000, pricing_model="gpt-4o", limit_micro_usd=400_000)
    created = (await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=fits))).job
    assert created.state in (Job.STATE_QUEUED, Job.STATE_RUNNING)
    await jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=created.job_id))

    for budget_fields, field in (
        ({"max_rollout_tokens": 100}, "job.spec.budget.pricing_model"),
        ({"max_rollout_tokens": -1, "pricing_model": "gpt-4o"}, "job.spec.budget.max_rollout_tokens"),
        ({"max_rollout_cost_micro_usd": -5}, "job.spec.budget.max_rollout_cost_micro_usd"),
        ({"max_rollout_tokens": 10, "pricing_model": "no-such-model"}, "job.spec.budget.pricing_model"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=costly_job(**budget_fields)))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, budget_fields
        assert [v.field for v in bad_request(bad.value).field_violations] == [field]
