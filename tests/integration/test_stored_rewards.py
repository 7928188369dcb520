"""Scores written back to the trajectory store (`RecordScores`), on SQLite and PostgreSQL, and by a
training job: rewards are stored, filterable by the reward range and present in the exports."""

from __future__ import annotations

import asyncio
import json
import math

import grpc
import pytest
from bench.trajectory_store import make_trajectory
from google.rpc import error_details_pb2
from suite_calls import rpc_error, tenant_key

from cohort.api.collector.v1 import collector_pb2 as cpb
from cohort.api.collector.v1 import collector_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.api.reward.v1 import reward_pb2, reward_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.platform.rpc.client import bad_request

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def suite(start_suite_for, database_settings):
    return await start_suite_for(database_settings, ["collector", "jobs"])


def collector(suite) -> collector_pb2_grpc.CollectorServiceStub:
    return collector_pb2_grpc.CollectorServiceStub(suite.context.channels.channel("collector"))


def unscored(i: int) -> tpb.Trajectory:
    """A stored rollout as a collector writes it: decisions, no reward yet."""
    t = make_trajectory(i)
    t.trajectory_id = f"r-{i}"
    t.ClearField("reward")
    t.ClearField("advantage")
    del t.reward_components[:]
    for decision in t.decisions:
        decision.ClearField("advantage")
    return t


async def ingest(stub, items, **kwargs) -> cpb.IngestTrajectoriesResponse:
    async def stream():
        for item in items:
            yield cpb.IngestTrajectoriesRequest(trajectory=item)

    return await stub.IngestTrajectories(stream(), timeout=30, **kwargs)


async def ids(stub, **filter_fields) -> list[str]:
    found = await stub.SearchTrajectories(
        cpb.SearchTrajectoriesRequest(filter=cpb.TrajectoryFilter(**filter_fields), page_size=1000),
        timeout=10,
    )
    return sorted(hit.trajectory.trajectory_id for hit in found.hits)


async def export(stub, export_format, **filter_fields) -> dict[str, str]:
    request = cpb.ExportTrajectoriesRequest(
        format=export_format, filter=cpb.TrajectoryFilter(**filter_fields)
    )
    return {r.trajectory_id: r.record async for r in stub.ExportTrajectories(request, timeout=30)}


def score(t: tpb.Trajectory, reward: float, advantage: float) -> cpb.TrajectoryScore:
    return cpb.TrajectoryScore(
        trajectory_id=t.trajectory_id,
        reward=reward,
        components=[tpb.RewardComponent(name="outcome", value=reward, weight=1.0, detail="d")],
        advantage=advantage,
        decision_advantages=[advantage + k for k in range(len(t.decisions))],
    )


async def test_recorded_scores_are_stored_filterable_exported_and_idempotent(suite):
    stub = collector(suite)
    rollouts = [unscored(i) for i in range(4)]
    assert all(len(t.decisions) > 1 for t in rollouts)
    assert (await ingest(stub, rollouts)).stored_count == 4
    assert await ids(stub, min_reward=0.0) == []  # nothing scored yet

    globex = await tenant_key(suite, "globex")
    assert (await ingest(stub, [unscored(9)], metadata=globex)).stored_count == 1
    request = cpb.RecordScoresRequest(
        request_id="scores-1",
        scores=[
            score(rollouts[0], 1.0, 0.9),
            score(rollouts[1], 0.25, -0.4),
            cpb.TrajectoryScore(trajectory_id="no-such-trajectory", reward=1.0),
            score(unscored(9), 1.0, 0.5),  # another tenant's id: as unknown as a missing one
            score(rollouts[2], 0.0, -0.5),
        ],
    )
    response = await stub.RecordScores(request, timeout=10)
    assert (response.recorded_count, response.unchanged_count) == (3, 0)
    assert [(f.index, f.trajectory_id) for f in response.failures] == [
        (2, "no-such-trajectory"),
        (3, "r-9"),
    ]
    assert all(f.status.code == grpc.StatusCode.NOT_FOUND.value[0] for f in response.failures)

    stored = (await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="r-1"), timeout=5)).trajectory
    assert stored.reward == 0.25 and stored.advantage == -0.4
    assert [(c.name, c.value, c.weight, c.detail) for c in stored.reward_components] == [
        ("outcome", 0.25, 1.0, "d")
    ]
    assert [d.advantage for d in stored.decisions] == pytest.approx(
        [-0.4 + k for k in range(len(stored.decisions))]
    )
    assert stored.task == rollouts[1].task and stored.agent_steps == rollouts[1].agent_steps
    theirs = await stub.GetTrajectory(
        cpb.GetTrajectoryRequest(trajectory_id="r-9"), metadata=globex, timeout=5
    )
    assert not theirs.trajectory.HasField("reward")

    # The reward range filter sees the indexed column; unscored r-3 matches no range.
    assert await ids(stub, min_reward=0.5) == ["r-0"]
    assert await ids(stub, min_reward=0.0) == ["r-0", "r-1", "r-2"]
    assert await ids(stub, min_reward=0.1, max_reward=0.3) == ["r-1"]
    hits = await stub.SearchTrajectories(
        cpb.SearchTrajectoriesRequest(filter=cpb.TrajectoryFilter(min_reward=0.5)), timeout=10
    )
    assert hits.hits[0].trajectory.reward == 1.0  # the BASIC view carries the reward

    # Exports: the whole message in cohort-jsonl, the score under "cohort" in trae-json.
    jsonl = {
        tid: json.loads(line) for tid, line in (await export(stub, cpb.EXPORT_FORMAT_COHORT_JSONL)).items()
    }
    assert jsonl["r-0"]["reward"] == 1.0 and jsonl["r-0"]["advantage"] == 0.9
    assert jsonl["r-0"]["rewardComponents"][0]["name"] == "outcome"
    assert jsonl["r-0"]["decisions"][1]["advantage"] == pytest.approx(1.9)
    assert "reward" not in jsonl["r-3"]
    trae = {tid: json.loads(doc) for tid, doc in (await export(stub, cpb.EXPORT_FORMAT_TRAE_JSON)).items()}
    assert trae["r-1"]["cohort"]["reward"] == 0.25
    assert trae["r-1"]["cohort"]["advantage"] == -0.4
    assert trae["r-1"]["cohort"]["reward_components"] == [
        {"name": "outcome", "value": 0.25, "weight": 1.0, "detail": "d"}
    ]
    assert trae["r-1"]["cohort"]["decision_advantages"][0] == -0.4
    assert "cohort" not in trae["r-3"]  # an unscored trajectory exports its plain Trae document
    assert set(await export(stub, cpb.EXPORT_FORMAT_TRAE_JSON, min_reward=0.5)) == {"r-0"}

    # A retry returns the first answer and writes nothing; the same scores without a request id
    # change nothing either.
    assert await stub.RecordScores(request, timeout=10) == response
    again = cpb.RecordScoresRequest(
        scores=[s for s in request.scores if s.trajectory_id.startswith("r-")][:2]
    )
    repeated = await stub.RecordScores(again, timeout=10)
    assert (repeated.recorded_count, repeated.unchanged_count, len(repeated.failures)) == (0, 2, 0)
    assert (
        await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="r-1"), timeout=5)
    ).trajectory == stored

    # A new score replaces the old one (components, advantages and the indexed reward alike).
    rescored = cpb.TrajectoryScore(trajectory_id="r-0", reward=0.1)
    assert (
        await stub.RecordScores(cpb.RecordScoresRequest(scores=[rescored]), timeout=10)
    ).recorded_count == 1
    replaced = (await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="r-0"), timeout=5)).trajectory
    assert replaced.reward == 0.1 and not replaced.HasField("advantage") and not replaced.reward_components
    assert not any(d.HasField("advantage") for d in replaced.decisions)
    assert await ids(stub, min_reward=0.5) == []

    # The content as first ingested is still a duplicate, and ingest never overwrites the score.
    resent = await ingest(stub, [unscored(1)])
    assert (resent.stored_count, resent.duplicate_count, list(resent.failures)) == (0, 1, [])
    assert (
        await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="r-1"), timeout=5)
    ).trajectory == stored


async def test_concurrent_scores_of_one_batch_are_each_written_once(suite):
    stub = collector(suite)
    rollouts = [unscored(i) for i in range(40)]
    await ingest(stub, rollouts)
    requests = [
        cpb.RecordScoresRequest(scores=[score(t, i / 40, 0.0) for t in rollouts[i % 4 :: 4]])
        for i in range(4)
    ]
    answers = await asyncio.gather(*(stub.RecordScores(r, timeout=30) for r in requests))
    assert sum(a.recorded_count for a in answers) == 40
    assert await ids(stub, min_reward=0.0) == sorted(t.trajectory_id for t in rollouts)


@pytest.mark.parametrize(
    ("scores", "field"),
    [
        ([], "scores"),
        ([cpb.TrajectoryScore(trajectory_id="r-0", reward=math.nan)], "scores[0].reward"),
        ([cpb.TrajectoryScore(reward=1.0)], "scores[0].trajectory_id"),
        (
            [cpb.TrajectoryScore(trajectory_id="r-0"), cpb.TrajectoryScore(trajectory_id="r-0")],
            "scores[1].trajectory_id",
        ),
        ([cpb.TrajectoryScore(trajectory_id="r-0", advantage=math.inf)], "scores[0].advantage"),
        (
            [cpb.TrajectoryScore(trajectory_id="r-0", decision_advantages=[0.0, math.nan])],
            "scores[0].decision_advantages[1]",
        ),
        (
            [
                cpb.TrajectoryScore(
                    trajectory_id="r-0", components=[tpb.RewardComponent(name="x", weight=-math.inf)]
                )
            ],
            "scores[0].components[0].weight",
        ),
    ],
)
async def test_bad_scores_are_rejected_whole_naming_the_field(suite, scores, field):
    stub = collector(suite)
    await ingest(stub, [unscored(0)])
    error = await rpc_error(stub.RecordScores(cpb.RecordScoresRequest(scores=scores), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(error).field_violations[0].field == field
    assert await ids(stub, min_reward=-1e9) == []  # nothing written


async def test_decision_advantages_that_do_not_fit_fail_alone(suite):
    stub = collector(suite)
    first, second = unscored(0), unscored(1)
    await ingest(stub, [first, second])
    response = await stub.RecordScores(
        cpb.RecordScoresRequest(
            scores=[
                cpb.TrajectoryScore(trajectory_id="r-0", reward=1.0, decision_advantages=[1.0]),
                score(second, 0.5, 0.1),
            ]
        ),
        timeout=10,
    )
    assert response.recorded_count == 1
    (failure,) = response.failures
    assert (failure.index, failure.status.code) == (0, grpc.StatusCode.INVALID_ARGUMENT.value[0])
    fields = []
    for detail in failure.status.details:
        violations = error_details_pb2.BadRequest()
        if detail.Unpack(violations):
            fields.extend(v.field for v in violations.field_violations)
    assert fields == ["scores[0].decision_advantages"]
    assert await ids(stub, min_reward=0.0) == ["r-1"]


# --- A training job stores what it scored ----------------------------------------------------------


@pytest.fixture
async def full_suite(start_suite_for, database_settings):
    return await start_suite_for(database_settings, ["all"])


def short_job() -> jobs_pb2.Job:
    return jobs_pb2.Job(
        display_name="stored rewards",
        spec=jobs_pb2.JobSpec(
            runtime=cpb.RuntimeSpec(
                toolbench=cpb.ToolbenchRuntime(), agent=tpb.AgentRef(name="toolbench-agent", version="1")
            ),
            dataset=jobs_pb2.DatasetSpec(
                toolbench=jobs_pb2.ToolbenchQueries(train_count=20, heldout_count=6, seed=11)
            ),
            policy=jobs_pb2.PolicySource(new_policy=jobs_pb2.NewPolicy()),
            group_size=4,
            batch_size=2,
            iterations=2,
            evaluation_interval=2,
            seed=11,
        ),
    )


async def test_a_training_job_stores_every_score_it_computed(full_suite):
    channels = full_suite.context.channels
    jobs = jobs_pb2_grpc.JobServiceStub(channels.channel("jobs"))
    stub = collector(full_suite)
    created = (await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=short_job()), timeout=30)).job
    async with asyncio.timeout(180):
        async for update in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=created.job_id), timeout=180):
            if update.job.state in (jobs_pb2.Job.STATE_SUCCEEDED, jobs_pb2.Job.STATE_FAILED):
                done = update.job
                break
    assert done.state == jobs_pb2.Job.STATE_SUCCEEDED, done.error.message

    training = await stub.SearchTrajectories(
        cpb.SearchTrajectoriesRequest(
            filter=cpb.TrajectoryFilter(job_id=done.job_id, labels={"purpose": "training"}),
            page_size=1000,
            view=cpb.TRAJECTORY_VIEW_FULL,
        ),
        timeout=30,
    )
    stored = [hit.trajectory for hit in training.hits]
    assert len(stored) == 2 * 2 * 4
    assert all(t.HasField("reward") and t.HasField("advantage") and t.reward_components for t in stored)
    assert all(d.HasField("advantage") for t in stored for d in t.decisions)

    # The stored values are what the reward service computes for these groups (again: the same).
    groups: dict[str, list[tpb.Trajectory]] = {}
    for t in sorted(stored, key=lambda t: (t.group_id, int(t.labels["cohort.rollout_index"]))):
        groups.setdefault(t.group_id, []).append(t)
    rescored = await reward_pb2_grpc.RewardServiceStub(channels.channel("reward")).ScoreGroups(
        reward_pb2.ScoreGroupsRequest(
            groups=[
                reward_pb2.TrajectoryGroup(group_id=g, trajectory_ids=[t.trajectory_id for t in ts])
                for g, ts in groups.items()
            ]
        ),
        timeout=30,
    )
    by_id = {t.trajectory_id: t for t in stored}
    for group in rescored.groups:
        for s in group.trajectories:
            t = by_id[s.trajectory_id]
            assert (t.reward, t.advantage) == pytest.approx((s.reward, s.advantage))
            assert [d.advantage for d in t.decisions] == pytest.approx(list(s.decision_advantages))

    # The reward range filter finds exactly the stored rewards, and the exports carry them.
    job_filter = {"job_id": done.job_id, "labels": {"purpose": "training"}}
    assert await ids(stub, min_reward=0.0, **job_filter) == sorted(by_id)
    high = sorted(t.trajectory_id for t in stored if t.reward >= 0.5)
    assert await ids(stub, min_reward=0.5, **job_filter) == high
    lines = await export(stub, cpb.EXPORT_FORMAT_COHORT_JSONL, **job_filter)
    assert {tid: json.loads(line)["reward"] for tid, line in lines.items()} == pytest.approx(
        {t.trajectory_id: t.reward for t in stored}
    )
    trae = await export(stub, cpb.EXPORT_FORMAT_TRAE_JSON, **job_filter)
    assert all(json.loads(doc)["cohort"]["reward"] == by_id[tid].reward for tid, doc in trae.items())

    # Evaluation rollouts carry the reward they were scored with (the job's reward: the outcome).
    evaluated = await stub.SearchTrajectories(
        cpb.SearchTrajectoriesRequest(
            filter=cpb.TrajectoryFilter(job_id=done.job_id, labels={"purpose": "evaluation"}), page_size=1000
        ),
        timeout=30,
    )
    assert len(evaluated.hits) == 2 * 6 * 2
    assert all(h.trajectory.reward == float(h.trajectory.success) for h in evaluated.hits)
    assert all(h.trajectory.reward_components for h in evaluated.hits)
