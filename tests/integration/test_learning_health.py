"""Learning health through the services: a stratum that cannot be solved is reported stuck, with its
name and iteration, in the job's progress; and the health state survives a checkpoint restore.

The dataset is toolbench queries given inline: one stratum as generated, one whose expected answer
no agent can give (its rollouts all fail alike, so its groups never carry a gradient).
"""

from __future__ import annotations

import json
import math

import pytest
from integration.test_training_jobs import stub, wait_for

from cohort.api.collector.v1 import collector_pb2
from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.config import Settings
from cohort.sdk import toolbench
from cohort.services.jobs.health import HealthState
from cohort.services.jobs.orchestration import TrainingLoop, TrainingServices, TrainingState
from cohort.services.suite import start_suite

pytestmark = pytest.mark.timeout(240)

ITERATIONS = 6
Job = jobs_pb2.Job
UNSOLVABLE = "unsolvable"
SOLVABLE_FAMILY = "kb_fact"
"""The uniform starting policy solves about one rollout in eight of these."""


def queries_with_an_unsolvable_stratum(seed: int = 3) -> jobs_pb2.InlineQueries:
    """Four solvable `kb_fact` queries and four that cannot be solved (stratum `unsolvable`), and
    held-out `kb_fact` queries."""
    solvable = toolbench.generate_queries("train", 8, seed, [SOLVABLE_FAMILY])
    train = list(solvable[:4])
    for query in solvable[4:]:
        impossible = collector_pb2.Query()
        impossible.CopyFrom(query)
        impossible.query_id = f"{query.query_id}-unsolvable"
        impossible.expected_answer = "no agent answers this"
        impossible.stratum = UNSOLVABLE
        train.append(impossible)
    heldout = toolbench.generate_queries("heldout", 2, seed, [SOLVABLE_FAMILY])
    return jobs_pb2.InlineQueries(train=train, heldout=heldout)


def spec_with_an_unsolvable_stratum(
    *, iterations: int, stuck_iterations: int, batch_size: int
) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(
        runtime=collector_pb2.RuntimeSpec(
            toolbench=collector_pb2.ToolbenchRuntime(),
            agent=trajectory_pb2.AgentRef(name="toolbench-agent", version="1"),
        ),
        dataset=jobs_pb2.DatasetSpec(inline=queries_with_an_unsolvable_stratum()),
        policy=jobs_pb2.PolicySource(new_policy=jobs_pb2.NewPolicy()),
        group_size=8,
        batch_size=batch_size,
        iterations=iterations,
        checkpoint_interval=2,
        evaluation_interval=iterations,
        seed=7,
        collapse_detection=jobs_pb2.CollapseDetection(stuck_iterations=stuck_iterations),
    )


def iterations_drawing(spec: jobs_pb2.JobSpec, stratum: str) -> list[int]:
    """The iterations (counted from 1, as `JobProgress.iteration`) whose batch draws `stratum`: the
    batch depends only on the seed and the iteration."""
    loop = TrainingLoop(None, "batches", spec)  # type: ignore[arg-type]  # only the batches are read
    return [
        i + 1
        for i in range(spec.iterations)
        if any(query.stratum == stratum for _, query in loop.iteration_queries(i))
    ]


@pytest.fixture
async def suite(tmp_path):
    suite = await start_suite(Settings(data_dir=tmp_path), ["all"], ephemeral_ports=True)
    try:
        yield suite
    finally:
        await suite.stop(0)


async def test_a_stratum_that_cannot_be_solved_is_reported_stuck(suite):
    jobs = stub(suite, "jobs", jobs_pb2_grpc.JobServiceStub)
    # One query per iteration: the strata take turns at random, so some iterations draw only the
    # unsolvable stratum (no update can come of them) and its count skips the others.
    spec = spec_with_an_unsolvable_stratum(iterations=ITERATIONS, stuck_iterations=2, batch_size=1)
    created = (await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=Job(spec=spec)))).job
    done = await wait_for(jobs, created.job_id, {Job.STATE_SUCCEEDED, Job.STATE_FAILED})
    assert done.state == Job.STATE_SUCCEEDED, done.error.message
    progress = done.progress

    drawn = iterations_drawing(done.spec, UNSOLVABLE)
    assert len(drawn) >= 2 and drawn != list(range(1, len(drawn) + 1)), (
        "the test needs the stratum drawn at least stuck_iterations times, not in every iteration"
    )
    stuck = [
        e
        for e in progress.events
        if e.kind == jobs_pb2.JOB_EVENT_KIND_STRATUM_STUCK and e.stratum == UNSOLVABLE
    ]
    assert [e.iteration for e in stuck] == [drawn[1]]
    assert f"'{UNSOLVABLE}'" in stuck[0].message and f"iteration {drawn[1]}" in stuck[0].message
    assert stuck[0].value == 2.0 and stuck[0].create_time.seconds > 0
    assert not any(
        e.kind == jobs_pb2.JOB_EVENT_KIND_STRATUM_RECOVERED and e.stratum == UNSOLVABLE
        for e in progress.events
    )
    iterations = [e.iteration for e in progress.events]
    assert iterations == sorted(iterations) and all(1 <= i <= ITERATIONS for i in iterations)

    health = progress.health
    assert health.groups == 1
    strata = {s.name: s for s in health.strata}
    assert UNSOLVABLE in strata and set(strata) <= {UNSOLVABLE, SOLVABLE_FAMILY}
    unsolvable = strata[UNSOLVABLE]
    assert unsolvable.stuck and unsolvable.success_rate == 0.0 and unsolvable.rollouts == 8
    # Only the iterations that drew it count.
    assert unsolvable.zero_success_iterations == len(drawn) and unsolvable.last_iteration == drawn[-1]
    if drawn[-1] == ITERATIONS:
        assert health.zero_variance_share == health.failed_zero_variance_share == 1.0
    # Every decision offers the head's tools: the entropy is at most ln(tools), 1 relative.
    tools = len(toolbench.policy_heads()[0].options)
    assert health.decisions > 0 and 0 < health.relative_entropy_mean <= 1.0
    assert 0 < health.entropy_mean <= math.log(tools) + 1e-12

    # Every iteration that drew only the unsolvable stratum changed nothing; each iteration that
    # changed the policy made a version.
    assert health.iterations_without_update >= len(drawn) > 0
    assert health.iterations_without_update < ITERATIONS, "the seed should make some updates too"
    assert progress.policy.version - 1 == ITERATIONS - health.iterations_without_update
    if ITERATIONS in drawn:
        assert progress.latest_update.update_norm == 0.0


async def test_the_cli_prints_each_event_once_as_the_job_streams(suite, capsys):
    from cohort.cli.jobs import follow_job

    jobs = stub(suite, "jobs", jobs_pb2_grpc.JobServiceStub)
    spec = spec_with_an_unsolvable_stratum(iterations=ITERATIONS, stuck_iterations=2, batch_size=1)
    created = (await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=Job(spec=spec)))).job
    final = await follow_job(jobs, created.job_id)
    assert final is not None and final.state == Job.STATE_SUCCEEDED
    printed = capsys.readouterr().out
    stuck = next(e for e in final.progress.events if e.kind == jobs_pb2.JOB_EVENT_KIND_STRATUM_STUCK)
    assert printed.count(stuck.message) == 1, printed
    assert f"iteration {stuck.iteration}: " in printed


async def run(loop: TrainingLoop, state: TrainingState, iterations: int) -> list:
    events = []
    for _ in range(iterations):
        events += (await loop.run_iteration(state)).events
    return events


async def test_health_state_survives_a_checkpoint_restore(suite, monkeypatch):
    services = TrainingServices.from_channels(suite.context.channels, with_budget=False)
    # Stuck at the third drawn iteration: after the restore (at 2), only if the count survived it.
    spec = spec_with_an_unsolvable_stratum(iterations=4, stuck_iterations=3, batch_size=2)
    assert iterations_drawing(spec, UNSOLVABLE) == [1, 2, 3, 4]  # one query of each stratum each time

    straight = TrainingLoop(services, "health-uninterrupted", spec)
    policy = await straight.start_policy()
    uninterrupted = TrainingState(policy=policy, baseline=policy)
    straight_events = await run(straight, uninterrupted, 4)

    first = TrainingLoop(services, "health-interrupted", spec)
    policy = await first.start_policy()
    interrupted = TrainingState(policy=policy, baseline=policy)
    resumed_events = await run(first, interrupted, 2)
    assert interrupted.health.strata[UNSOLVABLE].zero_success_iterations == 2
    await first.save_checkpoint(interrupted)
    second = TrainingLoop(services, "health-interrupted", spec, attempt=1)
    restored, _ = await second.restore(attempt=1)
    assert restored.health == interrupted.health
    resumed_events += await run(second, restored, 2)

    assert restored.health == uninterrupted.health
    assert resumed_events == straight_events
    assert [e.iteration for e in resumed_events if e.stratum == UNSOLVABLE] == [3]

    # A state.json written before health was checkpointed restores with the defaults.
    older = TrainingLoop(services, "health-older", spec)
    policy = await older.start_policy()
    state = TrainingState(policy=policy, baseline=policy)
    await run(older, state, 1)
    assert state.health != HealthState()

    def without_health(seed: int) -> str:
        saved = json.loads(TrainingState.to_json(state, seed))
        del saved["health"]
        return json.dumps(saved)

    monkeypatch.setattr(state, "to_json", without_health)
    await older.save_checkpoint(state)
    restored_older, _ = await TrainingLoop(services, "health-older", spec, attempt=1).restore(attempt=1)
    assert restored_older.health == HealthState()
