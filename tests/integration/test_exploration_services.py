"""ε-mixing exploration and the no-repeat rule through the services (issue 20): `Decide` over gRPC,
`CollectGroup` (toolbench and a gRPC agent), `UpdatePolicy` on mixture-sampled trajectories, job specs
over gRPC, JSON-RPC and REST, and a short training run whose training rollouts explore on schedule
while its evaluation rollouts do not.

One suite for the module (every service and the gateway; jobs created here are run by the JSON-RPC
tests' idle runner, and the training run drives `TrainingLoop` itself).
"""

from __future__ import annotations

import math
import uuid
from itertools import pairwise

import grpc
import pytest
import pytest_asyncio
from agents import grpc_agent
from integration.test_gateway_jsonrpc import SPEC, call, gateway_http, gateway_suite

from cohort.api.collector.v1 import collector_pb2 as cpb
from cohort.api.collector.v1 import collector_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2 as pb
from cohort.api.trainer.v1 import trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.platform.rpc.client import bad_request
from cohort.policy import PolicySnapshot
from cohort.sdk import toolbench
from cohort.sdk.runtime import DecisionRequest
from cohort.services.jobs.exploration import exploration_epsilon
from cohort.services.jobs.orchestration import TrainingLoop, TrainingServices, TrainingState

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(tmp_path_factory):
    async with gateway_suite(tmp_path_factory.mktemp("exploration")) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(suite):
    async with gateway_http(suite) as session:
        yield session


def trainer(suite) -> trainer_pb2_grpc.TrainerServiceStub:
    return trainer_pb2_grpc.TrainerServiceStub(suite.context.channels.channel("trainer"))


def collector(suite) -> collector_pb2_grpc.CollectorServiceStub:
    return collector_pb2_grpc.CollectorServiceStub(suite.context.channels.channel("collector"))


async def assert_invalid(call_, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert bad_request(caught.value).field_violations[0].field == field, caught.value.details()
    assert field in caught.value.details()


async def toolbench_policy(suite) -> tpb.PolicyRef:
    created = await trainer(suite).CreatePolicy(
        pb.CreatePolicyRequest(policy_id=f"tb-{uuid.uuid4().hex[:8]}", heads=toolbench.policy_heads())
    )
    return tpb.PolicyRef(policy_id=created.policy.policy_id, version=created.policy.version)


async def collect(suite, request: cpb.CollectGroupRequest) -> list[tpb.Trajectory]:
    responses = [r async for r in collector(suite).CollectGroup(request, timeout=60)]
    return [r.trajectory for r in sorted(responses, key=lambda r: r.rollout_index)]


def failed_then_next(decisions):
    """(failed decision, the next one): a failed toolbench call leaves the features unchanged."""
    return [
        (before, after)
        for before, after in pairwise(decisions)
        if before.chosen != toolbench.ANSWER and dict(before.features) == dict(after.features)
    ]


# --- Decide ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.25, 1.0, 7.0, math.nan, math.inf])
async def test_decide_refuses_exploration_outside_zero_one_naming_the_field(suite, bad):
    policy = await toolbench_policy(suite)
    for mode in (pb.DECISION_MODE_SAMPLE, pb.DECISION_MODE_GREEDY):
        await assert_invalid(
            trainer(suite).Decide(
                pb.DecideRequest(
                    policy_id=policy.policy_id, head=toolbench.HEAD, seed=3, mode=mode, exploration=bad
                )
            ),
            "exploration",
        )


async def test_decide_over_grpc_explores_exactly_as_the_local_snapshot(suite):
    stub = trainer(suite)
    policy = await toolbench_policy(suite)
    full = await stub.GetPolicy(pb.GetPolicyRequest(policy_id=policy.policy_id, include_parameters=True))
    local = PolicySnapshot.from_proto(full.policy)
    features = {"intent=arithmetic": 1.0, "progress=0": 1.0}
    for seed in range(20):
        offered = toolbench.TOOL_OPTIONS[seed % 3 :]
        remote = (
            await stub.Decide(
                pb.DecideRequest(
                    policy_id=policy.policy_id,
                    head=toolbench.HEAD,
                    features=features,
                    options=offered,
                    seed=seed,
                    exploration=0.35,
                )
            )
        ).decision
        mine = local.decide(DecisionRequest(toolbench.HEAD, features, offered, seed=seed, exploration=0.35))
        remote.ClearField("timestamp")
        mine.ClearField("timestamp")
        assert remote == mine
        assert remote.exploration == 0.35 and tuple(remote.options) == offered
        # a uniform policy's mixture is uniform too: q = pi = 1 / n
        assert remote.log_prob == pytest.approx(-math.log(len(offered)), abs=1e-12)


# --- CollectGroup -----------------------------------------------------------------------------------


async def test_collect_group_refuses_bad_exploration_before_running_anything(suite):
    policy = await toolbench_policy(suite)
    for bad in (-0.1, 1.0, math.nan):
        request = cpb.CollectGroupRequest(
            runtime=cpb.RuntimeSpec(toolbench=cpb.ToolbenchRuntime()),
            query=toolbench.generate_queries("train", 1, seed=4)[0],
            policy=policy,
            job_id="refused-exploration",
            exploration=bad,
        )
        await assert_invalid(collect(suite, request), "exploration")
    found = await collector(suite).SearchTrajectories(
        cpb.SearchTrajectoriesRequest(filter=cpb.TrajectoryFilter(job_id="refused-exploration"))
    )
    assert not found.hits


async def test_toolbench_rollouts_explore_avoid_failed_calls_and_train_exactly(suite):
    policy = await toolbench_policy(suite)
    runtime = cpb.RuntimeSpec(toolbench=cpb.ToolbenchRuntime(avoid_repeating_failed_calls=True))
    trajectories = []
    for i, query in enumerate(toolbench.generate_queries("train", 3, seed=21)):
        trajectories += await collect(
            suite,
            cpb.CollectGroupRequest(
                runtime=runtime, query=query, policy=policy, seed=100 + i, group_size=8, exploration=0.3
            ),
        )
    decisions = [d for t in trajectories for d in t.decisions]
    assert decisions and all(d.exploration == 0.3 and not d.greedy for d in decisions)
    for d in decisions:
        assert d.log_prob == pytest.approx(math.log(d.probabilities[d.chosen_index]), abs=1e-12)
    pairs = [pair for t in trajectories for pair in failed_then_next(t.decisions)]
    assert pairs, "a uniform policy fails some calls"
    for before, after in pairs:
        assert before.chosen not in after.options

    # The trainer takes the mixture log-probabilities as they are: nothing rejected.
    for i, trajectory in enumerate(trajectories):
        trajectory.advantage = 1.0 if i % 2 else -1.0
    updated = await trainer(suite).UpdatePolicy(
        pb.UpdatePolicyRequest(
            policy_id=policy.policy_id, base_version=policy.version, trajectories=trajectories
        )
    )
    assert not updated.rejected
    assert updated.metrics.trajectories_used == len(trajectories)
    assert updated.policy.version == policy.version + 1

    # Greedy groups do not explore.
    greedy = await collect(
        suite,
        cpb.CollectGroupRequest(
            runtime=runtime,
            query=toolbench.generate_queries("train", 1, seed=22)[0],
            policy=policy,
            seed=5,
            group_size=2,
            greedy=True,
            exploration=0.3,
        ),
    )
    assert all(d.exploration == 0.0 and d.greedy for t in greedy for d in t.decisions)


async def test_a_grpc_agent_receives_exploration_and_its_decide_calls_record_it(suite):
    server, address = await grpc_agent.start_agent()
    try:
        policy = await toolbench_policy(suite)
        trajectories = await collect(
            suite,
            cpb.CollectGroupRequest(
                runtime=cpb.RuntimeSpec(grpc=cpb.GrpcRuntime(address=address)),
                query=cpb.Query(query_id=f"q-{uuid.uuid4().hex[:8]}", text="6 * 7", payload_json="{}"),
                policy=policy,
                seed=9,
                group_size=3,
                exploration=0.125,
            ),
        )
    finally:
        await server.stop(0)
    rollout_ids = {t.trajectory_id for t in trajectories}
    received = [r for r in grpc_agent.REQUESTS if r.rollout_id in rollout_ids]
    assert len(received) == 3 and all(r.exploration == 0.125 for r in received)
    assert all(d.exploration == 0.125 for t in trajectories for d in t.decisions)


# --- job specs ----------------------------------------------------------------------------------


def job_spec(epsilon: float, decay_iterations: int = 0) -> jobs_pb2.JobSpec:
    spec = jobs_pb2.JobSpec(
        iterations=2,
        exploration=jobs_pb2.Exploration(epsilon=epsilon, decay_iterations=decay_iterations),
    )
    spec.runtime.toolbench.SetInParent()
    spec.dataset.toolbench.train_count = 10
    spec.dataset.toolbench.heldout_count = 5
    spec.policy.new_policy.SetInParent()
    return spec


@pytest.mark.parametrize(
    ("epsilon", "decay", "field"),
    [
        (1.0, 0, "job.spec.exploration.epsilon"),
        (-0.5, 0, "job.spec.exploration.epsilon"),
        (math.nan, 0, "job.spec.exploration.epsilon"),
        (0.1, -3, "job.spec.exploration.decay_iterations"),
    ],
)
async def test_create_job_refuses_bad_exploration_naming_the_field(suite, epsilon, decay, field):
    stub = jobs_pb2_grpc.JobServiceStub(suite.context.channels.channel("jobs"))
    await assert_invalid(
        stub.CreateJob(jobs_pb2.CreateJobRequest(job=jobs_pb2.Job(spec=job_spec(epsilon, decay)))), field
    )


async def test_exploration_over_json_rpc_and_rest(http):
    answer = await call(http, "training.start_grpo", {"spec": {**SPEC, "exploration": {"epsilon": 1.5}}})
    violations = answer["error"]["data"]["fieldViolations"]
    assert [v["field"] for v in violations] == ["job.spec.exploration.epsilon"]
    started = await call(
        http,
        "training.start_grpo",
        {"spec": {**SPEC, "exploration": {"epsilon": 0.2, "decayIterations": 10}}},
    )
    assert started["result"]["job"]["spec"]["exploration"] == {"epsilon": 0.2, "decayIterations": 10}
    body = {
        "spec": {
            **SPEC,
            "runtime": {"toolbench": {"avoid_repeating_failed_calls": True}},
            "exploration": {"epsilon": 0.1, "decay_iterations": 5},
        }
    }
    async with http.post("/v1/jobs", json=body) as response:
        assert response.status == 200, await response.text()
        spec = (await response.json())["job"]["spec"]
    assert spec["exploration"] == {"epsilon": 0.1, "decayIterations": 5}
    assert spec["runtime"]["toolbench"]["avoidRepeatingFailedCalls"] is True
    async with http.post("/v1/jobs", json={"spec": {**SPEC, "exploration": {"epsilon": -1}}}) as response:
        assert response.status == 400


# --- a training run ---------------------------------------------------------------------------------


async def test_training_rollouts_explore_on_schedule_and_evaluations_do_not(suite):
    spec = jobs_pb2.JobSpec(
        runtime=cpb.RuntimeSpec(toolbench=cpb.ToolbenchRuntime()),
        dataset=jobs_pb2.DatasetSpec(
            toolbench=jobs_pb2.ToolbenchQueries(train_count=12, heldout_count=3, seed=5)
        ),
        policy=jobs_pb2.PolicySource(new_policy=jobs_pb2.NewPolicy()),
        group_size=4,
        batch_size=2,
        iterations=2,
        seed=5,
        exploration=jobs_pb2.Exploration(epsilon=0.4, decay_iterations=4),
    )
    job_id = f"explore-{uuid.uuid4().hex[:8]}"
    services = TrainingServices.from_channels(suite.context.channels, with_budget=False)
    loop = TrainingLoop(services, job_id, spec)
    policy = await loop.start_policy()
    state = TrainingState(policy=policy, baseline=policy)
    for _ in range(spec.iterations):
        await loop.run_iteration(state)
    await loop.evaluate(state.baseline, state.policy)

    async def stored(purpose: str) -> list[tpb.Trajectory]:
        found = await collector(suite).SearchTrajectories(
            cpb.SearchTrajectoriesRequest(
                filter=cpb.TrajectoryFilter(job_id=job_id, labels={"purpose": purpose}),
                view=cpb.TRAJECTORY_VIEW_FULL,
                page_size=1000,
            )
        )
        return [hit.trajectory for hit in found.hits]

    training = await stored("training")
    assert len(training) == spec.iterations * spec.batch_size * spec.group_size
    assert {t.iteration for t in training} == {0, 1}
    for t in training:
        scheduled = exploration_epsilon(0.4, 4, t.iteration)
        assert scheduled > 0 and t.decisions
        assert all(d.exploration == scheduled for d in t.decisions), (t.iteration, scheduled)
    evaluation = await stored("evaluation")
    assert evaluation and all(d.exploration == 0.0 for t in evaluation for d in t.decisions)
    assert all(t.decisions for t in evaluation)
