"""The reward service over real gRPC: scoring, custom functions (Python and remote), bad input, listing."""

from __future__ import annotations

import asyncio
import math

import grpc
import grpc.aio
import pytest
from bench.trajectory_store import make_trajectory
from google.rpc import error_details_pb2
from suite_calls import rpc_error as rejected
from suite_calls import tenant_key

from cohort.api.collector.v1 import collector_pb2 as cpb
from cohort.api.collector.v1 import collector_pb2_grpc
from cohort.api.reward.v1 import reward_function_pb2, reward_function_pb2_grpc, reward_pb2_grpc
from cohort.api.reward.v1 import reward_pb2 as rpb
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.platform.config import Settings
from cohort.platform.rpc.client import bad_request, error_info
from cohort.services.suite import start_suite

# --- custom functions this module registers by entry point (`test_reward_service:<name>`)


def mentions(trajectory: tpb.Trajectory, params: dict) -> tuple[float, str]:
    """1 when the final result mentions `params["word"]`; raises on the trajectory named `boom`."""
    if trajectory.trajectory_id.endswith("boom"):
        raise RuntimeError("checker crashed")
    word = params.get("word", "")
    found = word in trajectory.final_result
    return (1.0 if found else 0.0), f"mentions {word!r}: {found}"


async def step_count(trajectory: tpb.Trajectory) -> float:
    """Async, no params; NaN on the trajectory named `nan`."""
    await asyncio.sleep(0)
    if trajectory.trajectory_id.endswith("nan"):
        return math.nan
    return float(len(trajectory.agent_steps))


class RemoteChecker(reward_function_pb2_grpc.RewardFunctionServiceServicer):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def Score(self, request, context):
        self.calls.append(request.function_name)
        if request.trajectory.trajectory_id.endswith("boom"):
            await context.abort(grpc.StatusCode.INTERNAL, "remote checker failed")
        score = 0.75 if "Paris" in request.trajectory.task else 0.25
        return reward_function_pb2.ScoreResponse(
            reward=score,
            detail=f"params {request.params_json}",
            components=[tpb.RewardComponent(name="city", value=score)],
        )


# --- fixtures and helpers


@pytest.fixture
async def suite(tmp_path):
    suite = await start_suite(
        Settings(data_dir=tmp_path / "var", auth_cache_seconds=0.0),
        ["collector", "reward", "jobs"],
        ephemeral_ports=True,
    )
    yield suite
    await suite.stop(0)


@pytest.fixture
async def remote_checker():
    server = grpc.aio.server()
    checker = RemoteChecker()
    reward_function_pb2_grpc.add_RewardFunctionServiceServicer_to_server(checker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield checker, f"127.0.0.1:{port}"
    await server.stop(0)


def reward(suite) -> reward_pb2_grpc.RewardServiceStub:
    return reward_pb2_grpc.RewardServiceStub(suite.context.channels.channel("reward"))


def traj(i: int, trajectory_id: str | None = None, **fields) -> tpb.Trajectory:
    t = make_trajectory(i, **fields)
    t.trajectory_id = trajectory_id or f"t-{i}"
    return t


async def register(stub, name: str, **fields) -> rpb.RewardFunction:
    response = await stub.RegisterRewardFunction(
        rpb.RegisterRewardFunctionRequest(function=rpb.RewardFunction(name=name, **fields)), timeout=5
    )
    return response.function


# --- tests


async def test_score_groups_end_to_end_with_given_and_stored_trajectories(suite):
    collector = collector_pb2_grpc.CollectorServiceStub(suite.context.channels.channel("collector"))

    async def items():
        for i in (2, 3):
            yield cpb.IngestTrajectoriesRequest(trajectory=traj(i, success=i == 2))

    assert (await collector.IngestTrajectories(items(), timeout=10)).stored_count == 2
    given = [traj(0, success=True), traj(1, success=False)]
    request = rpb.ScoreGroupsRequest(
        groups=[
            rpb.TrajectoryGroup(group_id="q1", trajectories=given, trajectory_ids=["t-2", "t-3"]),
            rpb.TrajectoryGroup(group_id="q2", trajectories=[traj(4, success=True), traj(5, success=True)]),
        ],
        reward=rpb.RewardSpec(outcome_weight=1.0, length_penalty_weight=0.5, step_budget=4),
    )
    response = await reward(suite).ScoreGroups(request, timeout=10)

    q1, q2 = response.groups
    assert response.dropped_group_count == 1
    assert [t.trajectory_id for t in q1.trajectories] == ["t-0", "t-1", "t-2", "t-3"]
    # 5 steps against a budget of 4: -0.25 each, weighted 0.5.
    assert [t.reward for t in q1.trajectories] == pytest.approx([0.875, -0.125, 0.875, -0.125])
    assert (q1.reward_mean, q1.reward_std, q1.size, q1.dropped) == pytest.approx((0.375, 0.5, 4, False))
    for score in q1.trajectories:
        assert [c.name for c in score.components] == ["outcome", "length_penalty"]
        assert len(score.decision_advantages) == 5
        assert list(score.decision_advantages) == [score.advantage] * 5
    assert q1.trajectories[0].advantage == pytest.approx(0.5 / (0.5 + 1e-6))
    assert q2.dropped and "zero reward variance" in q2.drop_reason
    assert [t.advantage for t in q2.trajectories] == [0.0, 0.0]

    missing = await rejected(
        reward(suite).ScoreGroups(
            rpb.ScoreGroupsRequest(groups=[rpb.TrajectoryGroup(group_id="q", trajectory_ids=["t-404"])]),
            timeout=5,
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND and "t-404" in missing.details()


async def test_python_custom_functions_and_a_failing_one_fails_only_its_trajectory(suite):
    stub = reward(suite)
    registered = await register(
        stub,
        "mentions",
        kind=rpb.REWARD_FUNCTION_KIND_PYTHON,
        entry_point="test_reward_service:mentions",
        description="final result mentions a word",
    )
    assert registered.kind == rpb.REWARD_FUNCTION_KIND_PYTHON and registered.HasField("create_time")
    await register(
        stub, "steps", kind=rpb.REWARD_FUNCTION_KIND_PYTHON, entry_point="test_reward_service:step_count"
    )
    group = rpb.TrajectoryGroup(
        group_id="g",
        trajectories=[traj(0), traj(1), traj(2, "t-boom"), traj(3, "t-nan"), traj(8)],
    )
    spec = rpb.RewardSpec(
        custom_functions=[
            rpb.WeightedFunction(name="mentions", weight=1.0, params_json='{"word": "Paris"}'),
            rpb.WeightedFunction(name="steps", weight=0.1),
        ]
    )
    response = await stub.ScoreGroups(rpb.ScoreGroupsRequest(groups=[group], reward=spec), timeout=10)
    scores = {t.trajectory_id: t for t in response.groups[0].trajectories}
    # make_trajectory(i) plans a trip to CITIES[i % 8]: Paris for 0 and 8.
    assert scores["t-0"].reward == pytest.approx(1.0 + 0.5)
    assert scores["t-1"].reward == pytest.approx(0.0 + 0.5)
    assert scores["t-8"].reward == pytest.approx(1.5)
    assert [(c.name, c.weight) for c in scores["t-0"].components] == [("mentions", 1.0), ("steps", 0.1)]
    assert scores["t-0"].components[0].detail == "mentions 'Paris': True"

    boom, nan = scores["t-boom"], scores["t-nan"]
    assert boom.error.code == grpc.StatusCode.ABORTED.value[0]
    assert "checker crashed" in boom.error.message
    assert nan.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "non-finite" in nan.error.message
    assert (boom.reward, list(boom.decision_advantages)) == (0.0, [])
    assert response.groups[0].size == 3  # the two failed scores are left out
    assert response.groups[0].reward_mean == pytest.approx(3.5 / 3)


async def test_remote_reward_function_service(suite, remote_checker):
    checker, address = remote_checker
    stub = reward(suite)
    await register(stub, "city", kind=rpb.REWARD_FUNCTION_KIND_REMOTE, address=address)
    await register(stub, "gone", kind=rpb.REWARD_FUNCTION_KIND_REMOTE, address="127.0.0.1:1")
    group = rpb.TrajectoryGroup(group_id="g", trajectories=[traj(0), traj(1), traj(2, "t-boom")])
    spec = rpb.RewardSpec(
        outcome_weight=0.0,
        custom_functions=[rpb.WeightedFunction(name="city", weight=2.0, params_json='{"k": 1}')],
    )
    response = await stub.ScoreGroups(rpb.ScoreGroupsRequest(groups=[group], reward=spec), timeout=10)
    paris, lima, boom = response.groups[0].trajectories
    assert (paris.reward, lima.reward) == (1.5, 0.5)
    assert [(c.name, c.value, c.weight) for c in paris.components] == [
        ("city", 0.75, 2.0),
        ("city.city", 0.75, 0.0),
    ]
    assert paris.components[0].detail == 'params {"k": 1}'
    assert boom.error.code == grpc.StatusCode.ABORTED.value[0]
    assert "remote checker failed" in boom.error.message
    assert checker.calls == ["city"] * 3

    unreachable = rpb.RewardSpec(custom_functions=[rpb.WeightedFunction(name="gone", weight=1.0)])
    response = await stub.ScoreGroups(rpb.ScoreGroupsRequest(groups=[group], reward=unreachable), timeout=30)
    for score in response.groups[0].trajectories:
        assert score.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert response.groups[0].dropped and response.groups[0].size == 0


def violation(error: grpc.aio.AioRpcError) -> str:
    details = bad_request(error)
    assert details is not None, error
    return details.field_violations[0].field


async def test_bad_input_is_rejected_with_the_field(suite):
    stub = reward(suite)
    two = [traj(0), traj(1)]
    good = rpb.TrajectoryGroup(group_id="g", trajectories=two)
    cases = [
        (rpb.ScoreGroupsRequest(), "groups"),
        (rpb.ScoreGroupsRequest(groups=[rpb.TrajectoryGroup(group_id="g")]), "groups[0]"),
        (
            rpb.ScoreGroupsRequest(
                groups=[rpb.TrajectoryGroup(group_id="g", trajectories=[traj(0), traj(0)])]
            ),
            "groups[0].trajectories[1].trajectory_id",
        ),
        (
            rpb.ScoreGroupsRequest(groups=[good, rpb.TrajectoryGroup(group_id="h", trajectory_ids=["t-1"])]),
            "groups[1].trajectory_ids[0]",
        ),
        (
            rpb.ScoreGroupsRequest(groups=[good], reward=rpb.RewardSpec(verification_weight=-1)),
            "reward.verification_weight",
        ),
        (
            rpb.ScoreGroupsRequest(groups=[good], reward=rpb.RewardSpec(token_budget=-5)),
            "reward.token_budget",
        ),
        (rpb.ScoreGroupsRequest(groups=[good], advantage=rpb.AdvantageConfig(gamma=1.01)), "advantage.gamma"),
        (rpb.ScoreGroupsRequest(groups=[good], advantage=rpb.AdvantageConfig(gamma=-0.5)), "advantage.gamma"),
        (
            rpb.ScoreGroupsRequest(groups=[good], advantage=rpb.AdvantageConfig(normalization=9)),
            "advantage.normalization",
        ),
        (rpb.ScoreGroupsRequest(groups=[good], failure_policy=7), "failure_policy"),
        (
            rpb.ScoreGroupsRequest(
                groups=[good],
                reward=rpb.RewardSpec(custom_functions=[rpb.WeightedFunction(name="tool_usage", weight=-1)]),
            ),
            "reward.custom_functions[0].weight",
        ),
    ]
    for request, field in cases:
        error = await rejected(stub.ScoreGroups(request, timeout=5))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error)
        assert violation(error) == field

    unknown = rpb.RewardSpec(custom_functions=[rpb.WeightedFunction(name="nope", weight=1)])
    error = await rejected(stub.ScoreGroups(rpb.ScoreGroupsRequest(groups=[good], reward=unknown), timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "nope" in error.details()

    for function, field in [
        (
            rpb.RewardFunction(name="x", kind=rpb.REWARD_FUNCTION_KIND_PYTHON, entry_point="no_colon"),
            "function.entry_point",
        ),
        (
            rpb.RewardFunction(
                name="x", kind=rpb.REWARD_FUNCTION_KIND_PYTHON, entry_point="nowhere_module:f"
            ),
            "function.entry_point",
        ),
        (
            rpb.RewardFunction(name="x", kind=rpb.REWARD_FUNCTION_KIND_REMOTE, address="no-port"),
            "function.address",
        ),
        (
            rpb.RewardFunction(name="Bad Name", kind=rpb.REWARD_FUNCTION_KIND_REMOTE, address="h:1"),
            "function.name",
        ),
        (rpb.RewardFunction(name="x", address="h:1"), "function.kind"),
    ]:
        error = await rejected(
            stub.RegisterRewardFunction(rpb.RegisterRewardFunctionRequest(function=function), timeout=5)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violation(error) == field
    builtin = rpb.RewardFunction(name="outcome", kind=rpb.REWARD_FUNCTION_KIND_REMOTE, address="h:1")
    error = await rejected(
        stub.RegisterRewardFunction(rpb.RegisterRewardFunctionRequest(function=builtin), timeout=5)
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_list_register_idempotency_and_tenants(suite):
    stub = reward(suite)
    listed = await stub.ListRewardFunctions(rpb.ListRewardFunctionsRequest(), timeout=5)
    assert [f.name for f in listed.functions] == ["length_penalty", "outcome", "tool_usage", "verification"]
    assert {f.kind for f in listed.functions} == {rpb.REWARD_FUNCTION_KIND_BUILTIN}
    assert listed.next_page_token == ""

    request = rpb.RegisterRewardFunctionRequest(
        request_id="r-1",
        function=rpb.RewardFunction(
            name="a-remote", kind=rpb.REWARD_FUNCTION_KIND_REMOTE, address="localhost:9"
        ),
    )
    first = await stub.RegisterRewardFunction(request, timeout=5)
    again = await stub.RegisterRewardFunction(request, timeout=5)
    assert first == again
    changed = rpb.RewardFunction(
        name="a-remote", kind=rpb.REWARD_FUNCTION_KIND_REMOTE, address="localhost:10"
    )
    error = await rejected(
        stub.RegisterRewardFunction(rpb.RegisterRewardFunctionRequest(function=changed), timeout=5)
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    await register(
        stub, "z-python", kind=rpb.REWARD_FUNCTION_KIND_PYTHON, entry_point="test_reward_service:mentions"
    )

    names = []
    token = ""
    while True:
        page = await stub.ListRewardFunctions(
            rpb.ListRewardFunctionsRequest(page_size=4, page_token=token), timeout=5
        )
        names.extend(f.name for f in page.functions)
        token = page.next_page_token
        if not token:
            break
    assert names == ["length_penalty", "outcome", "tool_usage", "verification", "a-remote", "z-python"]

    acme = await tenant_key(suite, "acme")
    theirs = await stub.ListRewardFunctions(rpb.ListRewardFunctionsRequest(), metadata=acme, timeout=5)
    assert len(theirs.functions) == 4
    spec = rpb.RewardSpec(custom_functions=[rpb.WeightedFunction(name="a-remote", weight=1)])
    group = rpb.TrajectoryGroup(group_id="g", trajectories=[traj(0), traj(1)])
    error = await rejected(
        stub.ScoreGroups(rpb.ScoreGroupsRequest(groups=[group], reward=spec), metadata=acme, timeout=5)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    python = rpb.RewardFunction(name="p", kind=rpb.REWARD_FUNCTION_KIND_PYTHON, entry_point="os:getcwd")
    error = await rejected(
        stub.RegisterRewardFunction(
            rpb.RegisterRewardFunctionRequest(function=python), metadata=acme, timeout=5
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert info is not None and info.reason == "PERMISSION_DENIED"
    error = await rejected(
        stub.ListRewardFunctions(
            rpb.ListRewardFunctionsRequest(page_size=4, page_token=token or "x"), timeout=5
        )
    )
    assert violation(error) == "page_token"
    assert error_details_pb2.BadRequest  # the detail type the violations above came in


async def test_registrations_survive_a_restart_and_reach_every_reward_process(database_settings):
    """Stored, not process memory: a new process on the same database lists and scores with them."""
    settings = database_settings
    first = await start_suite(settings, ["collector", "reward", "jobs"], ephemeral_ports=True)
    try:
        await register(
            reward(first), "mentions", kind=rpb.REWARD_FUNCTION_KIND_PYTHON,
            entry_point="test_reward_service:mentions", description="says the word",
        )  # fmt: skip
        # A second reward process on the same database, started before it was registered elsewhere.
        second = await start_suite(settings, ["reward"], ephemeral_ports=True)
        try:
            await register(
                reward(first), "steps", kind=rpb.REWARD_FUNCTION_KIND_PYTHON,
                entry_point="test_reward_service:step_count",
            )  # fmt: skip
            listed = await reward(second).ListRewardFunctions(rpb.ListRewardFunctionsRequest(), timeout=5)
            assert [f.name for f in listed.functions][-2:] == ["mentions", "steps"]
            spec = rpb.RewardSpec(custom_functions=[rpb.WeightedFunction(name="steps", weight=1.0)])
            group = rpb.TrajectoryGroup(group_id="g", trajectories=[traj(0), traj(1)])
            scored = await reward(second).ScoreGroups(
                rpb.ScoreGroupsRequest(groups=[group], reward=spec), timeout=10
            )
            assert [c.name for c in scored.groups[0].trajectories[0].components] == ["steps"]
        finally:
            await second.stop(0)
    finally:
        await first.stop(0)

    restarted = await start_suite(settings, ["collector", "reward", "jobs"], ephemeral_ports=True)
    try:
        listed = await reward(restarted).ListRewardFunctions(rpb.ListRewardFunctionsRequest(), timeout=5)
        mentions = next(f for f in listed.functions if f.name == "mentions")
        assert (mentions.entry_point, mentions.description) == (
            "test_reward_service:mentions",
            "says the word",
        )
        assert mentions.HasField("create_time")
        spec = rpb.RewardSpec(
            custom_functions=[
                rpb.WeightedFunction(name="mentions", weight=1.0, params_json='{"word": "Paris"}')
            ]
        )
        group = rpb.TrajectoryGroup(group_id="g", trajectories=[traj(0), traj(1)])
        scored = await reward(restarted).ScoreGroups(
            rpb.ScoreGroupsRequest(groups=[group], reward=spec), timeout=10
        )
        assert [t.reward for t in scored.groups[0].trajectories] == [1.0, 0.0]
    finally:
        await restarted.stop(0)


async def test_a_request_id_reused_for_another_function_is_invalid(suite):
    stub = reward(suite)
    first = rpb.RewardFunction(name="one", kind=rpb.REWARD_FUNCTION_KIND_REMOTE, address="localhost:9")
    await stub.RegisterRewardFunction(rpb.RegisterRewardFunctionRequest(request_id="r", function=first))
    other = rpb.RewardFunction(name="two", kind=rpb.REWARD_FUNCTION_KIND_REMOTE, address="localhost:9")
    error = await rejected(
        stub.RegisterRewardFunction(rpb.RegisterRewardFunctionRequest(request_id="r", function=other))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await stub.ListRewardFunctions(rpb.ListRewardFunctionsRequest(), timeout=5)
    assert "two" not in [f.name for f in listed.functions]  # nothing stored for the refused request


@pytest.mark.parametrize(
    ("field", "value"),
    [("entry_point", "m" * 600 + ":f"), ("address", "h" * 400 + ":80")],
)
async def test_overlong_definitions_are_invalid(suite, field, value):
    kind = rpb.REWARD_FUNCTION_KIND_PYTHON if field == "entry_point" else rpb.REWARD_FUNCTION_KIND_REMOTE
    function = rpb.RewardFunction(name="long", kind=kind, **{field: value})
    error = await rejected(
        reward(suite).RegisterRewardFunction(rpb.RegisterRewardFunctionRequest(function=function))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"function.{field}" in error.details()


async def test_an_entry_point_this_process_cannot_import_fails_its_trajectories(database_settings):
    """Registered by a process that could import it (a row as that process would have written it)."""
    from datetime import UTC, datetime

    from cohort.platform.context import Identity, current_identity
    from cohort.platform.storage import open_database, write_transaction
    from cohort.platform.storage.schema import RewardFunctionRow
    from cohort.services.reward.functions import RewardFunctionRegistry
    from cohort.services.reward.service import GroupInput, RewardScorer, RewardSpec, WeightedFunction

    database = await open_database(database_settings)
    current_identity.set(Identity("tenant", "key", is_admin=True))
    try:
        async with write_transaction(database.sessions) as session:
            session.add(
                RewardFunctionRow(
                    tenant_id="tenant", name="elsewhere", kind="python", entry_point="not_here_module:score",
                    address="", description="", create_time=datetime.now(UTC),
                )
            )  # fmt: skip
        spec = RewardSpec(outcome_weight=0.0, custom_functions=(WeightedFunction("elsewhere", 1.0),))
        group = GroupInput("g", [traj(0), traj(1)])
        result = await RewardScorer(RewardFunctionRegistry(database)).score_groups(
            "tenant", [group], reward=spec
        )
        errors = [t.error for t in result.groups[0].trajectories]
        assert all(e is not None and e.reason == "REWARD_FUNCTION_UNAVAILABLE" for e in errors)
        assert "not_here_module" in errors[0].message
    finally:
        await database.close()
