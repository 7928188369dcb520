"""The trainer's RPCs over real gRPC, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from cohort.api.identity.v1 import identity_pb2, identity_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2 as pb
from cohort.api.trainer.v1 import trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.learning import bucket
from cohort.platform.rpc.client import bad_request
from cohort.policy import LocalDecider, PolicySnapshot, RemoteDecider
from cohort.sdk.runtime import DecisionRequest
from cohort.services.suite import start_suite

TOOLS = ["search", "calculator", "answer"]


@pytest.fixture
async def suite(database_settings):
    suite = await start_suite(database_settings, ["trainer", "jobs"], ephemeral_ports=True)
    yield suite
    await suite.stop(0)


def trainer(suite) -> trainer_pb2_grpc.TrainerServiceStub:
    return trainer_pb2_grpc.TrainerServiceStub(suite.context.channels.channel("trainer"))


def heads() -> list[pb.DecisionHead]:
    return [
        pb.DecisionHead(name="next_tool", options=TOOLS, feature_buckets=256, description="which tool"),
        pb.DecisionHead(name="pick", temperature=0.5),
    ]


async def create(stub, **fields) -> pb.Policy:
    fields.setdefault("heads", heads())
    response = await stub.CreatePolicy(pb.CreatePolicyRequest(**fields), timeout=10)
    return response.policy


async def expect_error(call, code: grpc.StatusCode, field: str | None = None, text: str | None = None):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    if field is not None:
        violations = bad_request(caught.value).field_violations
        assert violations[0].field == field, caught.value.details()
        assert field in caught.value.details()
    if text is not None:
        assert text in caught.value.details()
    return caught.value


async def test_create_get_list_and_idempotent_create(suite):
    stub = trainer(suite)
    first = await create(stub, display_name="toolbench", request_id="create-1")
    assert first.version == 1 and first.latest_version == 1 and first.parent_version == 0
    assert first.tenant_id == "default" and first.policy_id.startswith("policy-")
    assert [h.name for h in first.heads] == ["next_tool", "pick"]
    assert first.heads[1].feature_buckets == 4096 and first.heads[1].temperature == 0.5
    assert first.heads[0].temperature == 1.0 and len(first.parameters_sha256) == 64
    assert not first.parameters

    again = await create(stub, display_name="toolbench", request_id="create-1")
    assert again == first
    await expect_error(
        create(stub, display_name="other", request_id="create-1"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id",
    )
    named = await create(stub, policy_id="named-policy", display_name="named")
    assert named.policy_id == "named-policy"
    await expect_error(create(stub, policy_id="named-policy"), grpc.StatusCode.ALREADY_EXISTS)

    got = (
        await stub.GetPolicy(pb.GetPolicyRequest(policy_id=first.policy_id, include_parameters=True))
    ).policy
    assert got.parameters_sha256 == first.parameters_sha256 and got.display_name == "toolbench"
    assert [(p.head, len(p.weights)) for p in got.parameters] == [("next_tool", 256), ("pick", 4096)]
    assert not any(any(p.weights) for p in got.parameters)  # uniform start
    plain = (await stub.GetPolicy(pb.GetPolicyRequest(policy_id=first.policy_id, version=1))).policy
    assert not plain.parameters and plain.version == 1

    for i in range(3):
        await create(stub, display_name=f"more-{i}")
    seen, token = [], ""
    while True:
        page = await stub.ListPolicies(pb.ListPoliciesRequest(page_size=2, page_token=token))
        seen += page.policies
        token = page.next_page_token
        if not token:
            break
    assert [p.display_name for p in seen] == ["more-2", "more-1", "more-0", "named", "toolbench"]
    assert all(not p.parameters and p.version == 1 and p.parameters_sha256 for p in seen)

    # another tenant sees none of it
    other = await tenant_metadata(suite, "tenant-b")
    await expect_error(
        stub.GetPolicy(pb.GetPolicyRequest(policy_id=first.policy_id), metadata=other),
        grpc.StatusCode.NOT_FOUND,
    )
    assert not (await stub.ListPolicies(pb.ListPoliciesRequest(), metadata=other)).policies
    await expect_error(
        stub.Decide(pb.DecideRequest(policy_id=first.policy_id, head="next_tool"), metadata=other),
        grpc.StatusCode.NOT_FOUND,
    )
    # the same id may exist in another tenant
    theirs = await stub.CreatePolicy(
        pb.CreatePolicyRequest(policy_id="named-policy", heads=heads()), metadata=other
    )
    assert theirs.policy.tenant_id == "tenant-b"


async def tenant_metadata(suite, tenant: str) -> tuple[tuple[str, str]]:
    keys = identity_pb2_grpc.ApiKeyServiceStub(suite.context.channels.channel("jobs"))
    created = await keys.CreateApiKey(identity_pb2.CreateApiKeyRequest(tenant_id=tenant, display_name="t"))
    return (("authorization", f"Bearer {created.secret}"),)


async def test_local_and_remote_deciders_agree(suite):
    stub = trainer(suite)
    rng = np.random.default_rng(0)
    policy = await create(
        stub,
        initial_parameters=[
            pb.HeadParameters(head="next_tool", weights=rng.normal(size=256).tolist()),
            pb.HeadParameters(head="pick", weights=rng.normal(size=4096).tolist()),
        ],
    )
    full = (
        await stub.GetPolicy(pb.GetPolicyRequest(policy_id=policy.policy_id, include_parameters=True))
    ).policy
    local = LocalDecider(PolicySnapshot.from_proto(full))
    remote = RemoteDecider(stub, tpb.PolicyRef(policy_id=policy.policy_id))
    requests = [
        DecisionRequest("next_tool", {"steps": float(i), "has_number": 1.0}, seed=1000 + i) for i in range(20)
    ] + [
        DecisionRequest(
            "pick",
            {"x": 0.5},
            options=("a", "b", "c"),
            option_features=({"cost": 1.0}, {}, {"cost": 2.0}),
            seed=i,
        )
        for i in range(10)
    ]
    requests.append(DecisionRequest("next_tool", {"steps": 3.0}, greedy=True))
    for request in requests:
        mine, theirs = await local(request), await remote(request)
        assert theirs.policy.version == 1 and theirs.policy.policy_id == policy.policy_id
        assert (mine.chosen_index, mine.chosen, mine.log_prob, list(mine.probabilities)) == (
            theirs.chosen_index,
            theirs.chosen,
            theirs.log_prob,
            list(theirs.probabilities),
        )
        assert dict(mine.features) == dict(theirs.features) and mine.greedy == theirs.greedy
    assert len({(await remote(r)).chosen for r in requests[:20]}) > 1  # sampling, not a constant


async def test_bad_inputs_name_the_field(suite):
    stub = trainer(suite)
    bad_creates = [
        (dict(heads=[]), "heads"),
        (dict(heads=[pb.DecisionHead(name="")]), "heads[0].name"),
        (dict(heads=[pb.DecisionHead(name="a"), pb.DecisionHead(name="a")]), "heads[1].name"),
        (dict(heads=[pb.DecisionHead(name="a", feature_buckets=1000)]), "heads[0].feature_buckets"),
        (dict(heads=[pb.DecisionHead(name="a", feature_buckets=8)]), "heads[0].feature_buckets"),
        (dict(heads=[pb.DecisionHead(name="a", temperature=-1)]), "heads[0].temperature"),
        (dict(heads=[pb.DecisionHead(name="a", temperature=float("nan"))]), "heads[0].temperature"),
        (dict(heads=[pb.DecisionHead(name="a", options=["x", "x"])]), "heads[0].options[1]"),
        (dict(heads=[pb.DecisionHead(name="a", options=[""])]), "heads[0].options[0]"),
        (dict(initial_parameters=[pb.HeadParameters(head="zzz")]), "initial_parameters[0].head"),
        (
            dict(initial_parameters=[pb.HeadParameters(head="next_tool", weights=[0.0])]),
            "initial_parameters[0].weights",
        ),
        (
            dict(initial_parameters=[pb.HeadParameters(head="next_tool", weights=[float("inf")] * 256)]),
            "initial_parameters[0].weights",
        ),
        (dict(policy_id="bad id!"), "policy_id"),
        (dict(display_name="x" * 201), "display_name"),
    ]
    for fields, field in bad_creates:
        await expect_error(create(stub, **fields), grpc.StatusCode.INVALID_ARGUMENT, field)
    assert not (await stub.ListPolicies(pb.ListPoliciesRequest())).policies  # nothing half-written

    policy = await create(stub)
    pid = policy.policy_id
    await expect_error(
        stub.GetPolicy(pb.GetPolicyRequest(policy_id="")), grpc.StatusCode.INVALID_ARGUMENT, "policy_id"
    )
    await expect_error(
        stub.GetPolicy(pb.GetPolicyRequest(policy_id="missing")), grpc.StatusCode.NOT_FOUND, text="missing"
    )
    await expect_error(
        stub.GetPolicy(pb.GetPolicyRequest(policy_id=pid, version=7)),
        grpc.StatusCode.NOT_FOUND,
        text="version 7",
    )
    await expect_error(
        stub.GetPolicy(pb.GetPolicyRequest(policy_id=pid, version=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "version",
    )
    await expect_error(
        stub.ListPolicies(pb.ListPoliciesRequest(page_size=5000)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size",
    )
    await expect_error(
        stub.ListPolicies(pb.ListPoliciesRequest(page_token="garbage")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )

    def decide(**fields):
        fields.setdefault("policy_id", pid)
        return stub.Decide(pb.DecideRequest(**fields), timeout=5)

    await expect_error(decide(policy_id="nope", head="pick"), grpc.StatusCode.NOT_FOUND, text="'nope'")
    await expect_error(decide(head="nope"), grpc.StatusCode.NOT_FOUND, text="'nope'")
    await expect_error(decide(head="next_tool", version=9), grpc.StatusCode.NOT_FOUND, text="version 9")
    await expect_error(decide(head=""), grpc.StatusCode.INVALID_ARGUMENT, "head")
    await expect_error(decide(head="pick"), grpc.StatusCode.INVALID_ARGUMENT, "options")
    await expect_error(
        decide(head="pick", options=["a", "a"]), grpc.StatusCode.INVALID_ARGUMENT, "options[1]"
    )
    await expect_error(
        decide(head="next_tool", options=["answer", "search"]), grpc.StatusCode.INVALID_ARGUMENT, "options"
    )
    await expect_error(
        decide(head="pick", options=["a", "b"], option_features=[tpb.FeatureMap()]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "option_features",
    )
    await expect_error(
        decide(head="next_tool", features={"x": float("nan")}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "features[x]",
    )


def scored(policy_id: str, version: int, decision: tpb.Decision, advantage: float, i: int, **fields):
    return tpb.Trajectory(
        trajectory_id=f"t-{i}",
        group_id=f"g-{i // 4}",
        policy=tpb.PolicyRef(policy_id=policy_id, version=version),
        decisions=[decision],
        advantage=advantage,
        reward=1.0 if advantage > 0 else 0.0,
        **fields,
    )


async def test_update_moves_toward_positive_advantage_and_checks_versions(suite):
    stub = trainer(suite)
    policy = await create(stub)
    pid = policy.policy_id
    remote = RemoteDecider(stub, tpb.PolicyRef(policy_id=pid))
    features = {"has_number": 1.0}

    async def collect(version_seed: int, count: int = 16):
        trajectories = []
        for i in range(count):
            decision = await remote(DecisionRequest("next_tool", features, seed=version_seed * 100 + i))
            advantage = 1.0 if decision.chosen == "calculator" else -0.5
            trajectories.append(scored(pid, decision.policy.version, decision, advantage, i))
        return trajectories

    before = await stub.Decide(pb.DecideRequest(policy_id=pid, head="next_tool", features=features))
    batch = await collect(1)
    assert any(t.decisions[0].chosen == "calculator" for t in batch)
    unscored = tpb.Trajectory(trajectory_id="u", decisions=[batch[0].decisions[0]], policy=batch[0].policy)
    foreign = scored("someone-else", 1, batch[0].decisions[0], 1.0, 99)
    foreign.trajectory_id = "f"
    empty = tpb.Trajectory(trajectory_id="e", policy=tpb.PolicyRef(policy_id=pid, version=1), advantage=1.0)
    unknown_head = scored(pid, 1, tpb.Decision(head="nope", options=["a"]), 1.0, 98)
    unknown_head.trajectory_id = "h"
    request = pb.UpdatePolicyRequest(
        request_id="update-1",
        policy_id=pid,
        base_version=1,
        trajectories=[*batch, unscored, foreign, empty, unknown_head],
        config=pb.GrpoConfig(learning_rate=0.2, inner_epochs=4),
    )
    updated = await stub.UpdatePolicy(request, timeout=30)
    assert (
        updated.policy.version == 2 and updated.policy.parent_version == 1 and not updated.policy.parameters
    )
    reasons = {r.trajectory_id: r.reason for r in updated.rejected}
    assert set(reasons) == {"u", "f", "e", "h"}
    assert "not scored" in reasons["u"] and "another policy" in reasons["f"]
    assert "no decisions" in reasons["e"] and "'nope'" in reasons["h"]
    metrics = updated.metrics
    assert metrics.trajectories_used == 16 and metrics.decisions == 16 and metrics.groups_used == 4
    rewards = [t.reward for t in batch]
    assert metrics.reward_mean == pytest.approx(np.mean(rewards)) and metrics.reward_std == pytest.approx(
        np.std(rewards)
    )
    assert metrics.grad_norm >= 0 and metrics.entropy > 0 and updated.optimizer_state.step == 4

    # idempotent: the same request id answers the first response and makes no version 3
    assert await stub.UpdatePolicy(request, timeout=30) == updated
    latest = (await stub.GetPolicy(pb.GetPolicyRequest(policy_id=pid))).policy
    assert latest.version == 2 and latest.latest_version == 2
    old = (await stub.GetPolicy(pb.GetPolicyRequest(policy_id=pid, version=1))).policy
    assert old.latest_version == 2 and old.parameters_sha256 == policy.parameters_sha256

    after = await stub.Decide(pb.DecideRequest(policy_id=pid, head="next_tool", features=features))
    assert after.decision.policy.version == 2  # "latest" resolves to the new version at once here
    calculator = TOOLS.index("calculator")
    assert after.decision.probabilities[calculator] > before.decision.probabilities[calculator] + 0.05

    # the base must be the latest
    await expect_error(
        stub.UpdatePolicy(pb.UpdatePolicyRequest(policy_id=pid, base_version=1, trajectories=batch)),
        grpc.StatusCode.FAILED_PRECONDITION,
        text="stale base version",
    )
    await expect_error(
        stub.UpdatePolicy(pb.UpdatePolicyRequest(policy_id=pid, base_version=5, trajectories=batch)),
        grpc.StatusCode.NOT_FOUND,
        text="version 5",
    )
    await expect_error(
        stub.UpdatePolicy(pb.UpdatePolicyRequest(policy_id=pid, base_version=0, trajectories=batch)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "base_version",
    )
    await expect_error(
        stub.UpdatePolicy(pb.UpdatePolicyRequest(policy_id=pid, base_version=2)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "trajectories",
    )
    await expect_error(
        stub.UpdatePolicy(
            pb.UpdatePolicyRequest(
                policy_id=pid, base_version=2, trajectories=batch, config=pb.GrpoConfig(learning_rate=-1)
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "config.learning_rate",
    )

    # version 2 from version 1's trajectories (staleness 1 allowed), then version 3 rejects them
    second = await stub.UpdatePolicy(
        pb.UpdatePolicyRequest(policy_id=pid, base_version=2, trajectories=await collect(2) + batch[:2])
    )
    assert second.policy.version == 3 and not second.rejected and second.optimizer_state.step == 8
    third = await stub.UpdatePolicy(
        pb.UpdatePolicyRequest(policy_id=pid, base_version=3, trajectories=await collect(3) + batch[:2])
    )
    stale = {r.trajectory_id: r.reason for r in third.rejected}
    assert set(stale) == {"t-0", "t-1"} and "stale" in stale["t-0"]
    assert third.policy.version == 4 and third.metrics.trajectories_used == 16
    # a wider staleness window accepts them
    fourth = await stub.UpdatePolicy(
        pb.UpdatePolicyRequest(
            policy_id=pid,
            base_version=4,
            trajectories=batch[:2],
            config=pb.GrpoConfig(max_policy_staleness=5),
        )
    )
    assert not fourth.rejected and fourth.policy.version == 5

    # a checkpoint's optimizer state replaces the stored one
    restored = await stub.UpdatePolicy(
        pb.UpdatePolicyRequest(
            policy_id=pid,
            base_version=5,
            trajectories=await collect(5, 4),
            optimizer_state=pb.OptimizerState(step=100),
            config=pb.GrpoConfig(inner_epochs=1),
        )
    )
    assert restored.optimizer_state.step == 101


async def test_concurrent_updates_from_one_base_make_one_version(suite):
    stub = trainer(suite)
    pid = (await create(stub)).policy_id
    decision = (await stub.Decide(pb.DecideRequest(policy_id=pid, head="next_tool", seed=1))).decision
    trajectories = [scored(pid, 1, decision, 1.0, 0)]
    results = await asyncio.gather(
        *[
            stub.UpdatePolicy(
                pb.UpdatePolicyRequest(policy_id=pid, base_version=1, trajectories=trajectories)
            )
            for _ in range(4)
        ],
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, pb.UpdatePolicyResponse)]
    assert len(wins) == 1 and wins[0].policy.version == 2
    for failure in results:
        if not isinstance(failure, pb.UpdatePolicyResponse):
            assert (
                failure.code() == grpc.StatusCode.FAILED_PRECONDITION
                and "stale base version" in failure.details()
            )


async def test_update_with_kl_uses_the_reference_and_exact_bucket_moves(suite):
    stub = trainer(suite)
    pid = (await create(stub, heads=[pb.DecisionHead(name="pick", feature_buckets=16)])).policy_id
    decision = (
        await stub.Decide(
            pb.DecideRequest(policy_id=pid, head="pick", options=["a", "b"], mode=pb.DECISION_MODE_GREEDY)
        )
    ).decision
    assert decision.chosen == "a"  # uniform: ties go to the first
    update = await stub.UpdatePolicy(
        pb.UpdatePolicyRequest(
            policy_id=pid,
            base_version=1,
            trajectories=[scored(pid, 1, decision, 1.0, 0)],
            config=pb.GrpoConfig(kl_beta=0.1),
        )
    )
    assert update.policy.version == 2
    weights = (
        await stub.GetPolicy(pb.GetPolicyRequest(policy_id=pid, include_parameters=True))
    ).policy.parameters[0]
    # only the buckets of the options' biases moved: "a" up, "b" down
    moved = {i for i, w in enumerate(weights.weights) if w != 0.0}
    assert moved == {bucket("a\x1f", 16), bucket("b\x1f", 16)}
    assert weights.weights[bucket("a\x1f", 16)] > 0 > weights.weights[bucket("b\x1f", 16)]
    await expect_error(
        stub.UpdatePolicy(
            pb.UpdatePolicyRequest(
                policy_id=pid,
                base_version=2,
                trajectories=[scored(pid, 1, decision, 1.0, 0)],
                reference_version=9,
                config=pb.GrpoConfig(kl_beta=0.1),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "reference_version",
    )
