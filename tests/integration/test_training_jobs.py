"""Jobs that really train: the job manager driving the TrainingRunner through the other services.

The lifecycle machinery itself is tested with light runners in test_jobs_lifecycle.py; here every job
collects toolbench rollouts, scores, updates, checkpoints and evaluates.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from cohort.api.budget.v1 import budget_pb2, budget_pb2_grpc
from cohort.api.checkpoint.v1 import checkpoint_pb2, checkpoint_pb2_grpc
from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.config import Settings
from cohort.platform.context import Identity, current_identity
from cohort.services.jobs.runner import JobHandle, JobOutcome
from cohort.services.suite import start_suite

pytestmark = pytest.mark.timeout(240)

Job = jobs_pb2.Job


def toolbench_job(*, iterations: int = 3, latency_ms: int = 0, seed: int = 5, name: str = "job") -> Job:
    toolbench = collector_pb2.ToolbenchRuntime(simulated_tokens_per_step=200, simulated_model="toolbench-sim")
    if latency_ms:
        toolbench.simulated_step_latency.FromMilliseconds(latency_ms)
    return Job(
        display_name=name,
        spec=jobs_pb2.JobSpec(
            runtime=collector_pb2.RuntimeSpec(
                toolbench=toolbench, agent=trajectory_pb2.AgentRef(name="toolbench-agent", version="1")
            ),
            dataset=jobs_pb2.DatasetSpec(
                toolbench=jobs_pb2.ToolbenchQueries(train_count=20, heldout_count=6, seed=seed)
            ),
            policy=jobs_pb2.PolicySource(new_policy=jobs_pb2.NewPolicy()),
            group_size=4,
            batch_size=2,
            iterations=iterations,
            checkpoint_interval=2,
            evaluation_interval=iterations,
            seed=seed,
        ),
    )


@pytest.fixture
async def suite(tmp_path):
    suite = await start_suite(Settings(data_dir=tmp_path), ["all"], ephemeral_ports=True)
    try:
        yield suite
    finally:
        await suite.stop(0)


def stub(suite, name, stub_class):
    return stub_class(suite.context.channels.channel(name))


async def wait_for(jobs, job_id: str, states: set[int], seconds: float = 120.0) -> Job:
    """The first snapshot of `job_id` in one of `states`, from WatchJob."""
    async with asyncio.timeout(seconds):
        async for response in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), timeout=seconds):
            if response.job.state in states:
                return response.job
    raise AssertionError(f"job {job_id} ended its watch without reaching {states}")


async def weights(trainer, ref: trajectory_pb2.PolicyRef) -> dict[str, np.ndarray]:
    response = await trainer.GetPolicy(
        trainer_pb2.GetPolicyRequest(policy_id=ref.policy_id, version=ref.version, include_parameters=True)
    )
    return {p.head: np.array(p.weights) for p in response.policy.parameters}


async def test_a_job_trains_checkpoints_and_evaluates_end_to_end(suite):
    jobs = stub(suite, "jobs", jobs_pb2_grpc.JobServiceStub)
    created = (await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=toolbench_job()))).job
    assert created.state in (Job.STATE_QUEUED, Job.STATE_RUNNING)
    done = await wait_for(jobs, created.job_id, {Job.STATE_SUCCEEDED, Job.STATE_FAILED})
    assert done.state == Job.STATE_SUCCEEDED, done.error.message
    progress = done.progress
    assert progress.iteration == 3 and progress.iterations_total == 3
    assert progress.rollouts_completed == 3 * 2 * 4
    # A version per iteration whose groups carried signal (a group whose rollouts all failed has none).
    assert 1 <= progress.policy.version <= 4
    update = progress.latest_update
    assert update.groups_used + update.groups_dropped == 2
    assert progress.cost_micro_usd > 0
    assert len(progress.evaluations) == 1
    assert progress.evaluations[0].baseline.query_count == 6

    checkpoints = stub(suite, "checkpoint", checkpoint_pb2_grpc.CheckpointServiceStub)
    latest = await checkpoints.GetLatestCheckpoint(
        checkpoint_pb2.GetLatestCheckpointRequest(job_id=done.job_id)
    )
    assert latest.checkpoint.iteration == 3
    assert progress.latest_checkpoint_id == latest.checkpoint.checkpoint_id

    evaluated = await jobs.EvaluateJob(jobs_pb2.EvaluateJobRequest(job_id=done.job_id), timeout=120)
    assert evaluated.evaluation.candidate.policy.version == progress.policy.version
    assert evaluated.evaluation.baseline.policy.version == 1

    collector = stub(suite, "collector", collector_pb2_grpc.CollectorServiceStub)
    search = await collector.SearchTrajectories(
        collector_pb2.SearchTrajectoriesRequest(
            filter=collector_pb2.TrajectoryFilter(job_id=done.job_id, labels={"purpose": "training"}),
            page_size=100,
        )
    )
    assert len(search.hits) == 24
    assert {h.trajectory.iteration for h in search.hits} == {0, 1, 2}


async def test_pause_and_resume_ends_where_an_uninterrupted_run_ends(suite):
    jobs = stub(suite, "jobs", jobs_pb2_grpc.JobServiceStub)
    trainer = stub(suite, "trainer", trainer_pb2_grpc.TrainerServiceStub)
    spec = toolbench_job(iterations=4, latency_ms=30)  # slow enough for the pause to land mid-run
    straight = (await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=spec))).job
    paused = (await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=spec))).job

    await wait_for(jobs, paused.job_id, {Job.STATE_RUNNING})
    await jobs.PauseJob(jobs_pb2.PauseJobRequest(job_id=paused.job_id))
    stopped = await wait_for(jobs, paused.job_id, {Job.STATE_PAUSED, Job.STATE_SUCCEEDED})
    assert stopped.state == Job.STATE_PAUSED, "the job finished before the pause took effect"
    assert stopped.pause_reason == jobs_pb2.PAUSE_REASON_REQUESTED
    assert stopped.progress.latest_checkpoint_id, "a pause takes a checkpoint"
    await jobs.ResumeJob(jobs_pb2.ResumeJobRequest(job_id=paused.job_id))

    a = await wait_for(jobs, straight.job_id, {Job.STATE_SUCCEEDED, Job.STATE_FAILED})
    b = await wait_for(jobs, paused.job_id, {Job.STATE_SUCCEEDED, Job.STATE_FAILED})
    assert a.state == b.state == Job.STATE_SUCCEEDED
    assert a.progress.policy.version == b.progress.policy.version
    wa, wb = await weights(trainer, a.progress.policy), await weights(trainer, b.progress.policy)
    for head in wa:
        assert np.array_equal(wa[head], wb[head])
    assert a.progress.reward_mean == b.progress.reward_mean


async def test_cancel_during_collection_reaches_the_rollouts(suite):
    jobs = stub(suite, "jobs", jobs_pb2_grpc.JobServiceStub)
    job = (await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=toolbench_job(latency_ms=1000)))).job
    await wait_for(jobs, job.job_id, {Job.STATE_RUNNING})
    await asyncio.sleep(1.5)  # inside the first group's rollouts (1 s per step)
    started = time.monotonic()
    await jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job.job_id))
    done = await wait_for(jobs, job.job_id, {Job.STATE_CANCELLED, Job.STATE_SUCCEEDED, Job.STATE_FAILED})
    assert done.state == Job.STATE_CANCELLED
    assert time.monotonic() - started < 5.0
    collector = stub(suite, "collector", collector_pb2_grpc.CollectorServiceStub)
    for _ in range(20):  # the cancelled rollouts are stored as their group winds down
        search = await collector.SearchTrajectories(
            collector_pb2.SearchTrajectoriesRequest(
                filter=collector_pb2.TrajectoryFilter(
                    job_id=job.job_id,
                    termination_reasons=[trajectory_pb2.TERMINATION_REASON_CANCELLED],
                )
            )
        )
        if search.hits:
            break
        await asyncio.sleep(0.1)
    assert search.hits, "cancelled rollouts are stored with termination CANCELLED"


async def test_budget_exhaustion_pauses_and_a_raised_limit_resumes(suite):
    jobs = stub(suite, "jobs", jobs_pb2_grpc.JobServiceStub)
    budget = stub(suite, "budget", budget_pb2_grpc.BudgetServiceStub)
    job = (
        await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=toolbench_job(iterations=6, latency_ms=20)))
    ).job
    async with asyncio.timeout(60):
        async for response in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.job_id), timeout=60):
            if response.job.progress.iteration >= 1:
                break
    usage = await budget.GetUsage(budget_pb2.GetUsageRequest())
    spent = usage.tenant.spent_micro_usd + usage.tenant.reserved_micro_usd
    await budget.SetLimit(
        budget_pb2.SetLimitRequest(scope=budget_pb2.LIMIT_SCOPE_TENANT_MONTHLY, limit_micro_usd=spent + 1)
    )
    paused = await wait_for(jobs, job.job_id, {Job.STATE_PAUSED, Job.STATE_SUCCEEDED, Job.STATE_FAILED})
    assert paused.state == Job.STATE_PAUSED, paused.error.message
    assert paused.pause_reason == jobs_pb2.PAUSE_REASON_BUDGET_EXHAUSTED
    assert paused.progress.iteration < 6
    await asyncio.sleep(0.5)
    after = await budget.GetUsage(budget_pb2.GetUsageRequest())
    # The iteration in flight when the limit dropped finishes and is paid for; nothing starts after it.
    assert after.tenant.reserved_micro_usd == 0
    assert after.tenant.spent_micro_usd == paused.progress.cost_micro_usd

    await budget.SetLimit(
        budget_pb2.SetLimitRequest(scope=budget_pb2.LIMIT_SCOPE_TENANT_MONTHLY, limit_micro_usd=100_000_000)
    )
    await jobs.ResumeJob(jobs_pb2.ResumeJobRequest(job_id=job.job_id))
    done = await wait_for(jobs, job.job_id, {Job.STATE_SUCCEEDED, Job.STATE_FAILED})
    assert done.state == Job.STATE_SUCCEEDED, done.error.message
    assert done.progress.iteration == 6


class _DiesAfter(JobHandle):
    """An attempt whose worker stops (as if killed) once `iterations` iterations are done."""

    def __init__(self, job: Job, iterations: int) -> None:
        super().__init__(job, fencing_token=1)
        self._iterations = iterations

    async def update_progress(self, mutate):
        job = await super().update_progress(mutate)
        if job.progress.iteration >= self._iterations:
            self.cancelled.set()
        return job


async def test_a_taken_over_job_marks_the_dead_attempts_redone_work_superseded(suite):
    from cohort.sdk.trajectories import ATTEMPT_LABEL
    from cohort.services.jobs.orchestration import TrainingRunner

    current_identity.set(Identity(tenant_id="default", key_id="test", is_admin=True))
    runner = TrainingRunner(suite.context)
    job = toolbench_job(iterations=4)
    job.job_id, job.tenant_id, job.state = "job-takeover", "default", Job.STATE_RUNNING
    job.progress.attempt = 1
    # attempt 1 completes iterations 0-2 (checkpoint after iteration index 1: interval 2) and dies
    first = _DiesAfter(job, iterations=3)
    assert (await runner.run(first)).outcome is JobOutcome.CANCELLED
    # attempt 2 takes over from the checkpoint, which covers iterations 0 and 1
    taken_over = Job()
    taken_over.CopyFrom(first.job)
    taken_over.progress.attempt = 2
    second = JobHandle(taken_over, fencing_token=2)
    assert (await runner.run(second)).outcome is JobOutcome.SUCCEEDED

    collector = stub(suite, "collector", collector_pb2_grpc.CollectorServiceStub)
    found = await collector.SearchTrajectories(
        collector_pb2.SearchTrajectoriesRequest(
            filter=collector_pb2.TrajectoryFilter(
                job_id=job.job_id, labels={"purpose": "training"}, include_superseded=True
            ),
            page_size=1000,
        )
    )
    marked = {
        (t.labels[ATTEMPT_LABEL], t.iteration, t.superseded) for t in (h.trajectory for h in found.hits)
    }
    # attempt 1's iteration 2 was redone by attempt 2: superseded; the rest stands
    assert marked == {("1", 0, False), ("1", 1, False), ("1", 2, True), ("2", 2, False), ("2", 3, False)}
