"""`CollectGroup` over real gRPC against the whole suite: Python entry-point agents, toolbench, bad input."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import pytest
from agents import grpc_agent, python_agents
from google.protobuf.duration_pb2 import Duration

from cohort.api.collector.v1 import collector_pb2 as cpb
from cohort.api.collector.v1 import collector_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.platform.config import Settings
from cohort.platform.rpc.client import bad_request
from cohort.sdk import toolbench

COMPLETED = tpb.TERMINATION_REASON_COMPLETED
ERROR = tpb.TERMINATION_REASON_ERROR
TIMEOUT = tpb.TERMINATION_REASON_TIMEOUT
CANCELLED = tpb.TERMINATION_REASON_CANCELLED
COMPONENTS = ["all"]


@pytest.fixture
def start(start_suite_for):
    return lambda settings: start_suite_for(settings, COMPONENTS)


@pytest.fixture
async def suite(start, tmp_path):
    return await start(Settings(data_dir=tmp_path / "var", auth_cache_seconds=0.0))


def collector(suite) -> collector_pb2_grpc.CollectorServiceStub:
    return collector_pb2_grpc.CollectorServiceStub(suite.context.channels.channel("collector"))


def python_runtime(name: str, agent: str = "") -> cpb.RuntimeSpec:
    spec = cpb.RuntimeSpec(python=cpb.PythonRuntime(entry_point=f"agents.python_agents:{name}"))
    if agent:
        spec.agent.name = agent
    return spec


def request(runtime: cpb.RuntimeSpec, payload: str = "{}", **fields) -> cpb.CollectGroupRequest:
    query_id = fields.pop("query_id", f"q-{uuid.uuid4().hex[:8]}")
    return cpb.CollectGroupRequest(
        runtime=runtime,
        query=cpb.Query(query_id=query_id, text="find the answer", payload_json=payload),
        **fields,
    )


async def collect(stub, req, **kwargs) -> list[cpb.CollectGroupResponse]:
    return [response async for response in stub.CollectGroup(req, timeout=30, **kwargs)]


async def stored(stub, **filters) -> list[tpb.Trajectory]:
    found = await stub.SearchTrajectories(
        cpb.SearchTrajectoriesRequest(
            filter=cpb.TrajectoryFilter(**filters), view=cpb.TRAJECTORY_VIEW_FULL, page_size=100
        ),
        timeout=10,
    )
    return [hit.trajectory for hit in found.hits]


async def test_python_group_is_recorded_tagged_stored_and_searchable(start, database_settings):
    stub = collector(await start(database_settings))
    req = request(
        python_runtime("ok_agent", agent="ok"),
        group_size=8,
        seed=100,
        job_id="job-1",
        group_id="g-python",
        iteration=3,
        labels={"split": "train"},
        max_steps=5,
    )
    responses = await collect(stub, req)
    assert sorted(r.rollout_index for r in responses) == list(range(8))
    for response in responses:
        t = response.trajectory
        i = response.rollout_index
        assert t.termination_reason == COMPLETED, t.termination_detail
        assert t.success and t.outcome.kind == tpb.OUTCOME_KIND_SUCCESS and t.outcome.score == 1.0
        assert t.final_result.startswith(f"seed={100 + i} ")
        assert (t.job_id, t.group_id, t.iteration, t.query_id) == ("job-1", "g-python", 3, req.query.query_id)
        assert t.labels["split"] == "train" and t.labels["cohort.rollout_index"] == str(i)
        assert t.labels["cohort.seed"] == str(100 + i)
        assert t.agent.name == "ok" and t.tenant_id == "default" and t.HasField("create_time")
        assert t.task == "find the answer" and t.max_steps == 5
        assert [s.step_number for s in t.agent_steps] == [1, 2]
        assert t.agent_steps[0].tool_results[0].result == "result 1"
        assert t.agent_steps[0].HasField("timestamp") and t.HasField("end_time")
        assert len(t.llm_interactions) == 2
        # Usage the agent reported (simulated) wins over the recorded interactions, and is priced.
        assert (t.total_usage.input_tokens, t.total_usage.output_tokens) == (100, 20)
        assert t.total_usage.simulated
        assert t.cost_micro_usd == 18  # 100 * 0.1 + 20 * 0.4 micro-USD on toolbench-sim
    ids = {r.trajectory.trajectory_id for r in responses}
    assert len(ids) == 8
    found = await stored(stub, job_id="job-1", group_id="g-python")
    assert {t.trajectory_id for t in found} == ids
    assert all(t.agent_steps and t.termination_reason == COMPLETED for t in found)


async def test_failures_timeouts_and_garbage_end_their_rollout_only(suite):
    stub = collector(suite)
    req = request(
        python_runtime("mixed_agent"), group_size=8, seed=0, rollout_timeout=Duration(nanos=300_000_000)
    )
    responses = {r.rollout_index: r.trajectory for r in await collect(stub, req)}
    assert sorted(responses) == list(range(8))
    for i, t in responses.items():
        kind = i % 4
        assert not t.success or kind == 0
        if kind == 0:
            assert t.termination_reason == COMPLETED and t.success
        elif kind == 1:
            assert t.termination_reason == ERROR
            assert "RuntimeError: the tool server exploded" in t.termination_detail
            assert len(t.agent_steps) == 1  # what it did before failing is kept
        elif kind == 2:
            assert t.termination_reason == TIMEOUT
            assert "timeout of 0.3 s" in t.termination_detail
        else:
            assert t.termination_reason == ERROR and "result" in t.termination_detail
    found = await stored(stub, group_id=responses[0].group_id)
    assert len(found) == 8
    assert {t.termination_reason for t in found} == {COMPLETED, ERROR, TIMEOUT}


async def test_client_cancellation_reaches_the_agents_and_their_rollouts_are_stored(suite):
    stub = collector(suite)
    req = request(python_runtime("sleeping_agent"), group_size=4, seed=10, group_id="g-cancel")
    call = stub.CollectGroup(req, timeout=30)
    events = python_agents.EVENTS[req.query.query_id]
    reader = asyncio.ensure_future(call.read())
    for _ in range(200):
        if len(events) >= 4:
            break
        await asyncio.sleep(0.01)
    assert sorted(events) == [f"started:{s}" for s in (10, 11, 12, 13)]
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    for _ in range(200):
        found = await stored(stub, group_id="g-cancel")
        if len(found) == 4:
            break
        await asyncio.sleep(0.02)
    assert sorted(e for e in events if e.startswith("cancelled")) == [
        f"cancelled:{s}" for s in (10, 11, 12, 13)
    ]
    assert len(found) == 4
    assert {t.termination_reason for t in found} == {CANCELLED}
    assert all("cancelled" in t.termination_detail and len(t.agent_steps) == 1 for t in found)


async def test_concurrency_is_bounded_per_request_and_per_process(start, tmp_path):
    suite = await start(
        Settings(data_dir=tmp_path / "var", auth_cache_seconds=0.0, max_concurrent_rollouts=2)
    )
    stub = collector(suite)
    python_agents.RUNNING["most"] = 0
    responses = await collect(
        stub, request(python_runtime("counting_agent"), group_size=6, max_concurrency=3)
    )
    assert len(responses) == 6 and python_agents.RUNNING["most"] == 2  # the process bound wins
    python_agents.RUNNING["most"] = 0
    two_groups = [
        collect(stub, request(python_runtime("counting_agent"), group_size=4, max_concurrency=1))
        for _ in range(2)
    ]
    await asyncio.gather(*two_groups)
    assert python_agents.RUNNING["most"] == 2  # one per request, two requests


async def test_a_repeated_request_id_replays_the_group_without_running_it_again(suite):
    stub = collector(suite)
    req = request(python_runtime("ok_agent"), group_size=3, seed=5, request_id="collect-once")
    first = await collect(stub, req)
    second = await collect(stub, req)
    # ran once: three rollouts started, none more on the replay
    assert sorted(python_agents.EVENTS[req.query.query_id]) == ["started:5", "started:6", "started:7"]
    by_index = {r.rollout_index: r.trajectory.trajectory_id for r in first}
    assert [(r.rollout_index, r.trajectory.trajectory_id) for r in second] == sorted(by_index.items())
    assert all(r.trajectory.agent_steps for r in second)
    other = request(python_runtime("ok_agent"), group_size=2, request_id="collect-once")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stub, other)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(caught.value).field_violations[0].field == "request_id"


async def test_a_decision_without_a_policy_fails_that_rollout(suite):
    responses = await collect(collector(suite), request(python_runtime("deciding_agent"), group_size=2))
    for response in responses:
        assert response.trajectory.termination_reason == ERROR
        assert "FailedPrecondition" in response.trajectory.termination_detail
        assert "policy" in response.trajectory.termination_detail


BAD_REQUESTS = [
    ("no runtime kind", request(cpb.RuntimeSpec()), grpc.StatusCode.INVALID_ARGUMENT, "runtime"),
    (
        "entry point without a function",
        request(cpb.RuntimeSpec(python=cpb.PythonRuntime(entry_point="agents.python_agents"))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "runtime.python.entry_point",
    ),
    (
        "entry point that does not import",
        request(cpb.RuntimeSpec(python=cpb.PythonRuntime(entry_point="no_such_module_x:agent"))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "runtime.python.entry_point",
    ),
    (
        "missing function",
        request(python_runtime("nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "runtime.python.entry_point",
    ),
    (
        "sync function",
        request(python_runtime("sync_agent")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "runtime.python.entry_point",
    ),
    (
        "not a function",
        request(python_runtime("not_callable")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "runtime.python.entry_point",
    ),
    (
        "negative group",
        request(python_runtime("ok_agent"), group_size=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "group_size",
    ),
    (
        "negative seed",
        request(cpb.RuntimeSpec(toolbench=cpb.ToolbenchRuntime()), seed=-5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "seed",
    ),
    (
        "group too big",
        request(python_runtime("ok_agent"), group_size=65),
        grpc.StatusCode.INVALID_ARGUMENT,
        "group_size",
    ),
    (
        "negative timeout",
        request(python_runtime("ok_agent"), rollout_timeout=Duration(seconds=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "rollout_timeout",
    ),
    (
        "negative concurrency",
        request(python_runtime("ok_agent"), max_concurrency=-2),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_concurrency",
    ),
    (
        "reserved label",
        request(python_runtime("ok_agent"), labels={"cohort.seed": "1"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "labels[cohort.seed]",
    ),
    (
        "payload not an object",
        request(python_runtime("ok_agent"), payload="[1]"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "query.payload_json",
    ),
    (
        "no query",
        cpb.CollectGroupRequest(runtime=python_runtime("ok_agent")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "query",
    ),
    (
        "toolbench without a policy",
        request(cpb.RuntimeSpec(toolbench=cpb.ToolbenchRuntime())),
        grpc.StatusCode.INVALID_ARGUMENT,
        "policy",
    ),
    (
        "agent address without a port",
        request(cpb.RuntimeSpec(grpc=cpb.GrpcRuntime(address="localhost"))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "runtime.grpc.address",
    ),
]


async def test_bad_requests_are_refused_naming_the_field_and_run_nothing(suite):
    stub = collector(suite)
    for name, req, code, field in BAD_REQUESTS:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub, req)
        assert caught.value.code() == code, (name, caught.value.details())
        assert bad_request(caught.value).field_violations[0].field == field, name
        assert field.split(".")[0].split("[")[0] in caught.value.details(), name
    assert await stored(stub) == []


async def test_an_unreachable_agent_address_is_refused_before_the_group_starts(suite):
    stub = collector(suite)
    address = "127.0.0.1:1"  # nothing listens on port 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stub, request(cpb.RuntimeSpec(grpc=cpb.GrpcRuntime(address=address))))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert address in caught.value.details()
    assert await stored(stub) == []


# --- with policies (TrainerService) ------------------------------------------------------------------


async def create_policy(suite, policy_id: str, heads) -> tpb.PolicyRef:
    trainer = trainer_pb2_grpc.TrainerServiceStub(suite.context.channels.channel("trainer"))
    created = await trainer.CreatePolicy(
        trainer_pb2.CreatePolicyRequest(policy_id=policy_id, heads=heads), timeout=10
    )
    return tpb.PolicyRef(policy_id=created.policy.policy_id, version=created.policy.version)


async def test_toolbench_group_of_8_decides_with_the_policy_and_is_stored(suite):
    stub = collector(suite)
    policy = await create_policy(suite, "toolbench-policy", toolbench.policy_heads())
    query = toolbench.generate_queries("train", 1, seed=3)[0]
    runtime = cpb.RuntimeSpec(toolbench=cpb.ToolbenchRuntime(simulated_tokens_per_step=40))
    req = cpb.CollectGroupRequest(
        runtime=runtime,
        query=query,
        policy=tpb.PolicyRef(policy_id=policy.policy_id),
        seed=11,
        job_id="job-tb",
    )
    responses = await collect(stub, req)
    assert sorted(r.rollout_index for r in responses) == list(range(8))
    task = toolbench.task_from_query(query)
    for response in responses:
        t = response.trajectory
        assert t.termination_reason in (COMPLETED, tpb.TERMINATION_REASON_MAX_STEPS), t.termination_detail
        assert t.agent.name == "toolbench-agent" and t.query_id == query.query_id
        assert t.policy == policy  # version 0 asked: the group is pinned to the latest, 1
        assert t.decisions and all(d.head == toolbench.HEAD and d.policy == policy for d in t.decisions)
        assert all(d.log_prob <= 0 and len(d.probabilities) == len(d.options) for d in t.decisions)
        assert t.agent_steps and len(t.agent_steps) == len(t.decisions)
        assert t.success == (
            t.termination_reason == COMPLETED and toolbench.check_answer(task, t.final_result)
        )
        assert t.total_usage.simulated and t.total_usage.input_tokens == 30 * len(t.decisions)
        assert t.cost_micro_usd > 0
    found = await stored(stub, job_id="job-tb", group_id=responses[0].trajectory.group_id)
    assert len(found) == 8
    # The same seed decides the same way again (immutable version, seeded sampling).
    again = await collect(stub, req)
    chosen = {r.rollout_index: [d.chosen for d in r.trajectory.decisions] for r in responses}
    assert {r.rollout_index: [d.chosen for d in r.trajectory.decisions] for r in again} == chosen


async def test_policy_problems(suite):
    stub = collector(suite)
    policy = await create_policy(
        suite, "other-heads", [trainer_pb2.DecisionHead(name="next_tool", feature_buckets=64)]
    )
    cases = [
        (
            "unknown policy",
            tpb.PolicyRef(policy_id="no-such-policy"),
            cpb.RuntimeSpec(toolbench=cpb.ToolbenchRuntime()),
        ),
        ("unknown version", tpb.PolicyRef(policy_id=policy.policy_id, version=9), python_runtime("ok_agent")),
        ("unknown version, remote agent", tpb.PolicyRef(policy_id=policy.policy_id, version=9), None),
    ]
    server, address = await grpc_agent.start_agent()
    try:
        for name, ref, runtime in cases:
            runtime = runtime or cpb.RuntimeSpec(grpc=cpb.GrpcRuntime(address=address))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await collect(stub, request(runtime, policy=ref))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND, (name, caught.value.details())
            assert ref.policy_id in caught.value.details(), name
    finally:
        await server.stop(0)
    # toolbench decides with `next_tool` over fixed options; a policy whose head has other options is
    # usable only if it has the head at all: a policy without it is refused naming the head.
    headless = await create_policy(
        suite, "no-next-tool", [trainer_pb2.DecisionHead(name="route", options=["a", "b"])]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stub, request(cpb.RuntimeSpec(toolbench=cpb.ToolbenchRuntime()), policy=headless))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "'next_tool'" in caught.value.details()
    assert await stored(stub) == []
    # Problems only the agent's decision reveals end that rollout as ERROR, with the reason.
    for payload, reason in (
        ('{"head": "no_such_head"}', "no_such_head"),
        ('{"options": ["a", "a"]}', "options"),
        ('{"options": []}', "options"),
    ):
        responses = await collect(
            stub, request(python_runtime("deciding_agent"), payload, group_size=2, policy=policy)
        )
        for response in responses:
            t = response.trajectory
            assert t.termination_reason == ERROR and reason in t.termination_detail, (
                payload,
                t.termination_detail,
            )


@pytest.mark.parametrize("nan_score", [False, True])
async def test_secrets_never_leave_the_collector(suite, nan_score):
    from agents.python_agents import LEAKED_SECRET

    stub = collector(suite)
    req = request(
        python_runtime("leaky_agent"),
        payload=json.dumps({"nan_score": nan_score}),
        group_size=2,
        group_id=f"g-leaky-{nan_score}",
    )
    responses = await collect(stub, req)
    assert len(responses) == 2
    for response in responses:
        trajectory = response.trajectory
        assert trajectory.agent_steps, "the step with the key was recorded"
        assert LEAKED_SECRET not in str(trajectory), "streamed back unredacted"
        # a score the runtime refuses ends the rollout as ERROR; it is stored all the same
        assert (trajectory.termination_reason == tpb.TERMINATION_REASON_ERROR) is nan_score
    found = await stored(stub, group_id=req.group_id)
    assert len(found) == 2 and all(LEAKED_SECRET not in str(t) for t in found)


async def test_a_rollout_the_store_refuses_is_redacted_before_it_is_streamed(tmp_path):
    from agents.python_agents import LEAKED_SECRET

    from cohort.platform.errors import InvalidArgument
    from cohort.platform.storage import open_database
    from cohort.services.collector.collection import _note_store_failure
    from cohort.services.collector.store import IngestItemResult, ItemStatus, TrajectoryStore

    database = await open_database(Settings(data_dir=tmp_path))
    try:
        trajectory = tpb.Trajectory(trajectory_id="t-1", final_result=f"use {LEAKED_SECRET}")
        refused = IngestItemResult(
            0, "t-1", ItemStatus.FAILED, InvalidArgument("trajectory.labels", "too long")
        )
        _note_store_failure(trajectory, refused, TrajectoryStore(database))
    finally:
        await database.close()
    assert LEAKED_SECRET not in str(trajectory) and trajectory.final_result.startswith("use ")
    assert trajectory.termination_detail.startswith("not stored")
