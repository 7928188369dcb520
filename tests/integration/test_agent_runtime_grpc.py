"""`CollectGroup` with a gRPC `AgentRuntimeService` agent (tests/agents/grpc_agent.py): good, bad streams."""

from __future__ import annotations

import asyncio
import json
import uuid

import numpy as np
import pytest
from agents import grpc_agent
from google.protobuf.duration_pb2 import Duration

from cohort.api.collector.v1 import collector_pb2 as cpb
from cohort.api.collector.v1 import collector_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.platform.config import Settings
from cohort.services.suite import start_suite

COMPONENTS = ["collector", "jobs", "trainer"]


@pytest.fixture
async def suite(tmp_path):
    suite = await start_suite(
        Settings(data_dir=tmp_path / "var", auth_cache_seconds=0.0), COMPONENTS, ephemeral_ports=True
    )
    yield suite
    await suite.stop(0)


@pytest.fixture
async def agent():
    server, address = await grpc_agent.start_agent()
    yield address
    await server.stop(0)


def collector(suite) -> collector_pb2_grpc.CollectorServiceStub:
    return collector_pb2_grpc.CollectorServiceStub(suite.context.channels.channel("collector"))


def request(address: str, mode: str, **fields) -> cpb.CollectGroupRequest:
    return cpb.CollectGroupRequest(
        runtime=cpb.RuntimeSpec(grpc=cpb.GrpcRuntime(address=address)),
        query=cpb.Query(
            query_id=f"q-{uuid.uuid4().hex[:8]}",
            text="what is 6 * 7",
            payload_json=json.dumps({"mode": mode}),
        ),
        **fields,
    )


async def collect(stub, req) -> list[cpb.CollectGroupResponse]:
    return [response async for response in stub.CollectGroup(req, timeout=30)]


async def test_a_good_stream_becomes_a_complete_trajectory(suite, agent):
    stub = collector(suite)
    req = request(
        agent, "good", group_size=4, seed=40, job_id="j", group_id="g-remote", iteration=2, max_steps=9
    )
    responses = await collect(stub, req)
    assert sorted(r.rollout_index for r in responses) == [0, 1, 2, 3]
    runs = {r.rollout_id: r for r in grpc_agent.REQUESTS if r.group_id == "g-remote"}
    for response in responses:
        t = response.trajectory
        assert t.termination_reason == tpb.TERMINATION_REASON_COMPLETED, t.termination_detail
        assert t.success and t.outcome.kind == tpb.OUTCOME_KIND_SUCCESS and t.outcome.score == 1.0
        assert t.agent.name == "py-grpc-agent" and t.agent.version == "3"  # from `started`
        assert (t.provider, t.model, t.max_steps) == ("test", "toolbench-sim", 9)
        assert len(t.llm_interactions) == 1 and len(t.agent_steps) == 1
        assert t.agent_steps[0].tool_results[0].result == "42"
        assert t.decisions[0].chosen == "calculator" and t.decisions[0].step_number == 1
        assert (t.total_usage.input_tokens, t.total_usage.output_tokens) == (30, 10)
        assert t.cost_micro_usd == 7  # 30 * 0.1 + 10 * 0.4 micro-USD, rounded half up
        # What the agent was given: its rollout id is the trajectory id, its seed seed + i.
        run = runs[t.trajectory_id]
        assert run.seed == 40 + response.rollout_index
        assert t.final_result == f"seed={run.seed} chose=calculator"
        assert (run.job_id, run.group_id, run.iteration, run.max_steps) == ("j", "g-remote", 2, 9)
        assert run.trainer_address == suite.context.settings.address_of("trainer")
        # Never the caller's admin key (here the service credential): a key of the tenant alone.
        assert run.api_key and run.api_key != suite.context.settings.api_key
        agent_identity = await suite.context.api_keys.lookup(run.api_key)
        assert agent_identity.tenant_id == "default" and not agent_identity.is_admin
        assert run.task == "what is 6 * 7" and run.timeout.seconds == 300
    found = await stub.SearchTrajectories(
        cpb.SearchTrajectoriesRequest(filter=cpb.TrajectoryFilter(group_id="g-remote"), page_size=10),
        timeout=10,
    )
    assert len(found.hits) == 4


MALFORMED = {
    "second_finished": "after `finished`",
    "event_after_finished": "after `finished`",
    "no_finished": "without `finished`",
    "bad_index": "`chosen_index` 7 is out of range",
    "bad_features": "feature 'step' is not finite",
    "empty_event": "has no kind",
    "abort": "INTERNAL: the agent fell over",
}


async def test_malformed_streams_end_their_rollout_as_error_and_the_group_goes_on(suite, agent):
    stub = collector(suite)
    for mode, reason in MALFORMED.items():
        responses = await collect(stub, request(agent, mode, group_size=2))
        assert len(responses) == 2, mode
        for response in responses:
            t = response.trajectory
            assert t.termination_reason == tpb.TERMINATION_REASON_ERROR, (mode, t.termination_detail)
            assert reason in t.termination_detail, (mode, t.termination_detail)
            assert not t.success


async def test_timeout_and_cancellation_cancel_the_run_call(suite, agent):
    stub = collector(suite)
    req = request(agent, "sleep", group_size=2, rollout_timeout=Duration(nanos=200_000_000))
    responses = await collect(stub, req)
    assert {r.trajectory.termination_reason for r in responses} == {tpb.TERMINATION_REASON_TIMEOUT}
    for rollout_id in [r.trajectory.trajectory_id for r in responses]:
        await _until(lambda rollout_id=rollout_id: "cancelled" in grpc_agent.EVENTS[rollout_id])

    req = request(agent, "sleep", group_size=3, group_id="g-cancelled")
    call = stub.CollectGroup(req, timeout=30)
    reader = asyncio.ensure_future(call.read())
    await _until(lambda: sum(r.group_id == "g-cancelled" for r in grpc_agent.REQUESTS) == 3)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    ids = [r.rollout_id for r in grpc_agent.REQUESTS if r.group_id == "g-cancelled"]
    for rollout_id in ids:
        await _until(lambda rollout_id=rollout_id: "cancelled" in grpc_agent.EVENTS[rollout_id])
    for rollout_id in ids:
        await _until(lambda rollout_id=rollout_id: _stored(stub, rollout_id))
        stored = await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id=rollout_id), timeout=5)
        assert stored.trajectory.termination_reason == tpb.TERMINATION_REASON_CANCELLED


async def _stored(stub, trajectory_id: str) -> bool:
    found = await stub.SearchTrajectories(
        cpb.SearchTrajectoriesRequest(filter=cpb.TrajectoryFilter(group_id="g-cancelled"), page_size=10),
        timeout=5,
    )
    return any(hit.trajectory.trajectory_id == trajectory_id for hit in found.hits)


async def _until(condition, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_a_remote_agent_deciding_through_decide_matches_local_decisions(suite, agent):
    """Same policy version, inputs and seed: `Decide` over gRPC and the collector's local snapshot agree."""
    trainer = trainer_pb2_grpc.TrainerServiceStub(suite.context.channels.channel("trainer"))
    weights = np.random.default_rng(5).normal(0, 2.0, 64).tolist()
    created = await trainer.CreatePolicy(
        trainer_pb2.CreatePolicyRequest(
            policy_id="shared",
            heads=[trainer_pb2.DecisionHead(name="next_tool", feature_buckets=64)],
            initial_parameters=[trainer_pb2.HeadParameters(head="next_tool", weights=weights)],
        ),
        timeout=10,
    )
    policy = tpb.PolicyRef(policy_id="shared", version=created.policy.version)
    stub = collector(suite)
    remote = await collect(stub, request(agent, "good", group_size=8, seed=70, policy=policy))
    local_runtime = cpb.RuntimeSpec(python=cpb.PythonRuntime(entry_point="agents.python_agents:ok_agent"))
    local_request = request(agent, "good", group_size=8, seed=70, policy=policy)
    local_request.runtime.CopyFrom(local_runtime)
    local = await collect(stub, local_request)
    first = {r.rollout_index: r.trajectory.decisions[0] for r in local}
    chosen = set()
    for response in remote:
        t = response.trajectory
        assert t.termination_reason == tpb.TERMINATION_REASON_COMPLETED, t.termination_detail
        assert t.policy == policy
        mine, theirs = first[response.rollout_index], t.decisions[0]
        assert (theirs.chosen, theirs.policy) == (mine.chosen, mine.policy)
        assert theirs.log_prob == pytest.approx(mine.log_prob, abs=1e-12)
        assert list(theirs.probabilities) == pytest.approx(list(mine.probabilities), abs=1e-12)
        chosen.add(theirs.chosen)
    assert len(chosen) > 1  # sampled with different seeds, not a constant
