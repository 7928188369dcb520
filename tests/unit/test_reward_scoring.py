"""The reward math: each term, the group estimators, and `RewardScorer` on hand-computed cases."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.learning import advantages
from cohort.platform.errors import InvalidArgument, NotFound
from cohort.services.reward import terms
from cohort.services.reward.functions import FunctionKind, RewardFunction, RewardFunctionRegistry
from cohort.services.reward.service import (
    AdvantageSpec,
    CreditAssignment,
    FailurePolicy,
    GroupInput,
    Normalization,
    RewardScorer,
    RewardSpec,
    WeightedFunction,
)

COMPLETED = tpb.TERMINATION_REASON_COMPLETED


def make(
    trajectory_id: str,
    *,
    success: bool | None = None,
    score: float | None = None,
    kind: int = tpb.OUTCOME_KIND_UNSPECIFIED,
    termination: int = COMPLETED,
    steps: list[list[tuple[str, bool | None]]] | None = None,
    step_rewards: list[float | None] | None = None,
    decisions_at: list[int] | None = None,
    offered: list[str] | None = None,
    tokens: tuple[int, int] | None = None,
) -> tpb.Trajectory:
    """A trajectory; `steps[k]` lists the (tool name, result success or None for no result) of step k+1."""
    t = tpb.Trajectory(trajectory_id=trajectory_id, termination_reason=termination)
    if success is not None:
        t.success = success
    if score is not None:
        t.outcome.score = score
    t.outcome.kind = kind
    if offered is not None:
        t.llm_interactions.add().tools_available.extend(offered)
    for number, calls in enumerate(steps or [], start=1):
        step = t.agent_steps.add(step_number=number)
        for k, (name, result) in enumerate(calls):
            call = step.tool_calls.add(call_id=f"c{number}.{k}", name=name, arguments_json="{}")
            if result is not None:
                step.tool_results.add(call_id=call.call_id, success=result)
    for step, reward in zip(t.agent_steps, step_rewards or [], strict=False):
        if reward is not None:
            step.step_reward = reward
    for number in decisions_at or []:
        t.decisions.add(head="next_tool", step_number=number)
    if tokens is not None:
        t.total_usage.input_tokens, t.total_usage.output_tokens = tokens
    return t


def run(groups, **kwargs):
    scorer = RewardScorer(RewardFunctionRegistry())
    return asyncio.run(scorer.score_groups("tenant", groups, **kwargs))


# --- terms


def test_outcome_prefers_reported_score_then_success_then_kind():
    assert terms.outcome_term(make("a", score=0.25, success=True))[0] == 0.25
    assert terms.outcome_term(make("a", success=True, kind=tpb.OUTCOME_KIND_FAILURE))[0] == 1.0
    assert terms.outcome_term(make("a", success=False))[0] == 0.0
    assert terms.outcome_term(make("a", kind=tpb.OUTCOME_KIND_PARTIAL))[0] == 0.5
    assert terms.outcome_term(make("a", kind=tpb.OUTCOME_KIND_SUCCESS))[0] == 1.0
    assert terms.outcome_term(make("a")) == (0.0, "no outcome reported")


def test_tool_usage_counts_failed_invalid_and_useful_calls():
    t = make(
        "a",
        steps=[[("search", True), ("search", False)], [("unknown_tool", True)], [("search", None)]],
        offered=["search", "verify"],
    )
    value, detail = terms.tool_usage_term(t)
    assert value == pytest.approx((0 - 1 - 1) / 4)
    assert detail == "4 calls: 1 useful, 1 failed, 1 invalid"
    assert terms.tool_usage_term(t, useful_reward=2.0, failure_cost=0.5)[0] == pytest.approx(
        (2.0 - 0.5 - 1.0) / 4
    )
    bad_arguments = make("b", steps=[[("search", True)]])
    bad_arguments.agent_steps[0].tool_calls[0].arguments_json = '["not", "an", "object"]'
    assert terms.tool_usage_term(bad_arguments)[0] == -1.0
    assert terms.tool_usage_term(make("c")) == (0.0, "no tool calls")


def test_verification_needs_a_matching_call_before_the_last_step():
    before = make("a", steps=[[("search", True)], [("run_check", True)], [("answer", True)]])
    assert terms.verification_term(before) == (1.0, "run_check at step 2")
    only_at_the_end = make("b", steps=[[("search", True)], [("verify_answer", True)]])
    assert terms.verification_term(only_at_the_end)[0] == 0.0
    failed = make("c", steps=[[("Verify", False)], [("answer", True)]])
    assert terms.verification_term(failed)[0] == 0.0
    assert terms.verification_term(failed, require_success=False)[0] == 1.0
    custom = make("d", steps=[[("run_tests", True)], [("answer", True)]])
    assert terms.verification_term(custom)[0] == 0.0
    assert terms.verification_term(custom, pattern="run_tests")[0] == 1.0


def test_length_penalty_is_the_capped_fraction_over_each_budget():
    t = make("a", steps=[[]] * 6, tokens=(900, 600))
    assert terms.length_penalty_term(t, step_budget=4)[0] == pytest.approx(-0.5)
    assert terms.length_penalty_term(t, token_budget=1000)[0] == pytest.approx(-0.5)
    assert terms.length_penalty_term(t, step_budget=4, token_budget=1000)[0] == pytest.approx(-1.0)
    assert terms.length_penalty_term(t, step_budget=2)[0] == -1.0  # capped
    assert terms.length_penalty_term(t, step_budget=10, token_budget=5000)[0] == 0.0


# --- estimators


def test_grpo_normalizes_by_population_std_and_dr_grpo_by_mean_only():
    values = np.array([1.0, 0.0, 0.0, 1.0, 2.0, 4.0])
    groups = np.array([0, 0, 0, 0, 1, 1])
    mean, std, size = advantages.group_statistics(values, groups, 2)
    assert mean.tolist() == [0.5, 3.0]
    assert std.tolist() == [0.5, 1.0]
    assert size.tolist() == [4, 2]
    grpo = advantages.grpo_advantages(values, groups, mean, std, 1e-6)
    assert grpo == pytest.approx([0.5 / 0.500001, -0.5 / 0.500001, -0.5 / 0.500001, 0.5 / 0.500001, -1, 1])
    assert advantages.dr_grpo_advantages(values, groups, mean).tolist() == [0.5, -0.5, -0.5, 0.5, -1.0, 1.0]


def test_discounted_returns_by_hand():
    rewards = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    returns = advantages.discounted_returns(rewards, 0.5)
    assert returns.tolist() == [[1.0 + 0.25 * 2.0, 1.0, 2.0], [3.0, 0.0, 0.0]]


def test_flow_grpo_broadcast_repeats_each_advantage_per_decision():
    out = advantages.flow_grpo_broadcast(np.array([0.5, -1.0, 2.0]), np.array([2, 0, 3]))
    assert out.tolist() == [0.5, 0.5, 2.0, 2.0, 2.0]


# --- the scorer


def test_default_reward_is_the_outcome_broadcast_to_every_decision():
    result = run(
        [
            GroupInput(
                "g",
                [
                    make("a", success=True, steps=[[]] * 2, decisions_at=[1, 2, 2]),
                    make("b", success=False, decisions_at=[1]),
                    make("c", success=False),
                    make("d", success=True, decisions_at=[1, 1]),
                ],
            )
        ]
    )
    group = result.groups[0]
    assert (group.reward_mean, group.reward_std, group.size, group.dropped) == (0.5, 0.5, 4, False)
    a, b, c, d = group.trajectories
    expected = 0.5 / (0.5 + 1e-6)
    assert a.reward == 1.0 and a.advantage == pytest.approx(expected)
    assert a.decision_advantages == pytest.approx([expected] * 3)
    assert b.decision_advantages == pytest.approx([-expected])
    assert c.decision_advantages == []
    assert d.decision_advantages == pytest.approx([expected] * 2)
    assert [(x.name, x.value, x.weight) for x in a.components] == [("outcome", 1.0, 1.0)]
    assert result.dropped_group_count == 0


def test_weighted_terms_each_reported_and_summed():
    spec = RewardSpec(
        outcome_weight=2.0,
        tool_usage_weight=0.5,
        verification_weight=0.25,
        length_penalty_weight=1.0,
        step_budget=2,
    )
    ok = make("a", success=True, steps=[[("verify", True)], [("search", False)], [("answer", True)]])
    bad = make("b", success=False, steps=[[("search", True)]])
    result = run([GroupInput("g", [ok, bad])], reward=spec)
    first, second = result.groups[0].trajectories
    values = {c.name: (c.value, c.weight) for c in first.components}
    assert values == {
        "outcome": (1.0, 2.0),
        "tool_usage": (pytest.approx(-1 / 3), 0.5),
        "verification": (1.0, 0.25),
        "length_penalty": (pytest.approx(-0.5), 1.0),
    }
    assert first.reward == pytest.approx(2.0 - 0.5 / 3 + 0.25 - 0.5)
    assert second.reward == pytest.approx(0.0)
    assert sum(c.value * c.weight for c in first.components) == pytest.approx(first.reward)


def test_mean_only_normalization():
    group = GroupInput("g", [make("a", score=0.9), make("b", score=0.3), make("c", score=0.0)])
    result = run([group], advantage=AdvantageSpec(normalization=Normalization.MEAN_ONLY))
    assert [t.advantage for t in result.groups[0].trajectories] == pytest.approx([0.5, -0.1, -0.4])


def test_zero_variance_and_too_small_groups_are_dropped_and_counted():
    same = GroupInput("same", [make("a", score=0.1), make("b", score=0.1), make("c", score=0.1)])
    alone = GroupInput("alone", [make("d", success=True)])
    live = GroupInput("live", [make("e", success=True, decisions_at=[1]), make("f", success=False)])
    result = run([same, alone, live])
    assert result.dropped_group_count == 2
    same_score, alone_score, live_score = result.groups
    assert same_score.dropped and "zero reward variance" in same_score.drop_reason
    assert [t.advantage for t in same_score.trajectories] == [0.0, 0.0, 0.0]
    assert alone_score.dropped and "fewer than 2" in alone_score.drop_reason
    assert not live_score.dropped and live_score.drop_reason == ""
    assert live_score.trajectories[0].decision_advantages[0] > 0.99


def failing_group():
    return GroupInput(
        "g",
        [
            make("ok1", success=True, decisions_at=[1]),
            make("ok2", success=False),
            make("timeout", success=True, termination=tpb.TERMINATION_REASON_TIMEOUT, decisions_at=[1]),
            make("max", success=False, termination=tpb.TERMINATION_REASON_MAX_STEPS),
        ],
    )


def test_failure_policy_score_as_failure_ignores_the_reported_success():
    result = run([failing_group()])
    scores = {t.trajectory_id: t for t in result.groups[0].trajectories}
    assert scores["timeout"].reward == 0.0
    assert "TIMEOUT" in scores["timeout"].components[0].detail
    assert scores["timeout"].advantage < 0 and not scores["timeout"].dropped
    assert result.groups[0].size == 4


def test_failure_policy_drop_and_retry_leave_the_rollout_out():
    for policy in (FailurePolicy.DROP, FailurePolicy.RETRY):
        result = run([failing_group()], failure_policy=policy)
        group = result.groups[0]
        timeout = group.trajectories[2]
        assert timeout.dropped and timeout.decision_advantages == [] and timeout.advantage == 0.0
        assert group.size == 3
        assert group.reward_mean == pytest.approx(1 / 3)
        assert group.retry_trajectory_ids == (["timeout"] if policy is FailurePolicy.RETRY else [])


def test_discounted_returns_per_decision_by_hand():
    gamma = 0.5
    # a: steps rewards [1, -, 0] + reward 1 at the last step -> returns [1.25, 0.5, 1.0]
    a = make("a", success=True, steps=[[]] * 3, step_rewards=[1.0, None, 0.0], decisions_at=[1, 2, 3, 3])
    # b: no step rewards, reward 0 -> returns [0, 0]
    b = make("b", success=False, steps=[[]] * 2, decisions_at=[2])
    result = run(
        [GroupInput("g", [a, b])],
        advantage=AdvantageSpec(credit_assignment=CreditAssignment.DISCOUNTED_RETURNS, gamma=gamma),
    )
    mean, std = 1.25 / 2, 1.25 / 2  # of the returns from the start: 1.25 and 0
    first, second = result.groups[0].trajectories
    expected = [(g - mean) / (std + 1e-6) for g in (1.25, 0.5, 1.0, 1.0)]
    assert first.decision_advantages == pytest.approx(expected)
    assert first.advantage == pytest.approx(expected[0])
    assert second.decision_advantages == pytest.approx([(0 - mean) / (std + 1e-6)])
    assert result.groups[0].reward_mean == 0.5  # the reported statistics are of the rewards


def test_discounted_with_gamma_one_and_no_step_rewards_equals_broadcast():
    def group():
        return [
            GroupInput(
                "g",
                [
                    make("a", score=0.8, steps=[[]] * 3, decisions_at=[1, 3]),
                    make("b", score=0.2, steps=[[]] * 2, decisions_at=[2]),
                    make("c", score=0.5, decisions_at=[1]),
                ],
            )
        ]

    broadcast = run(group())
    discounted = run(group(), advantage=AdvantageSpec(credit_assignment=CreditAssignment.DISCOUNTED_RETURNS))
    for x, y in zip(broadcast.groups[0].trajectories, discounted.groups[0].trajectories, strict=True):
        assert x.decision_advantages == pytest.approx(y.decision_advantages)
        assert x.advantage == pytest.approx(y.advantage)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"reward": RewardSpec(tool_usage_weight=-1.0)}, "reward.tool_usage_weight"),
        ({"reward": RewardSpec(outcome_weight=math.nan)}, "reward.outcome_weight"),
        ({"reward": RewardSpec(step_budget=-1)}, "reward.step_budget"),
        ({"reward": RewardSpec(length_penalty_weight=1.0)}, "reward.length_penalty_weight"),
        ({"advantage": AdvantageSpec(gamma=1.5)}, "advantage.gamma"),
        ({"advantage": AdvantageSpec(epsilon=-1.0)}, "advantage.epsilon"),
        (
            {"reward": RewardSpec(custom_functions=(WeightedFunction("tool_usage", 1.0, "[1]"),))},
            "reward.custom_functions[0].params_json",
        ),
        (
            {"reward": RewardSpec(custom_functions=(WeightedFunction("verification", 1, '{"x": 1}'),))},
            "reward.custom_functions[0].params_json",
        ),
        (
            {"reward": RewardSpec(custom_functions=(WeightedFunction("outcome", 1.0),))},
            "reward.custom_functions[0].name",
        ),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(InvalidArgument) as caught:
        run([GroupInput("g", [make("a"), make("b")])], **kwargs)
    assert caught.value.field == field


def test_bad_groups_name_the_field():
    cases = [
        ([], "groups"),
        ([GroupInput("g")], "groups[0]"),
        ([GroupInput("g", [make("a"), make("a")])], "groups[0].trajectories[1].trajectory_id"),
        ([GroupInput("g", [make("a")]), GroupInput("g", [make("b")])], "groups[1].group_id"),
        ([GroupInput("g", [make("")])], "groups[0].trajectories[0].trajectory_id"),
        ([GroupInput("g", [make("a", score=1.5)])], "groups[0].trajectories[0].outcome.score"),
        (
            [GroupInput("g", [make("a", steps=[[]], step_rewards=[math.inf])])],
            "groups[0].trajectories[0].agent_steps[0].step_reward",
        ),
    ]
    discounted = AdvantageSpec(credit_assignment=CreditAssignment.DISCOUNTED_RETURNS)  # reads step rewards
    for groups, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            run(groups, advantage=discounted)
        assert caught.value.field == field


def test_unknown_function_is_not_found():
    spec = RewardSpec(custom_functions=(WeightedFunction("nope", 1.0),))
    with pytest.raises(NotFound):
        run([GroupInput("g", [make("a")])], reward=spec)


def test_builtin_named_as_custom_function_takes_params():
    spec = RewardSpec(
        outcome_weight=0.0,
        custom_functions=(WeightedFunction("verification", 1.0, '{"pattern": "^run_tests$"}'),),
    )
    yes = make("a", steps=[[("run_tests", True)], [("answer", True)]])
    no = make("b", steps=[[("verify", True)], [("answer", True)]])
    result = run([GroupInput("g", [yes, no])], reward=spec)
    assert [t.reward for t in result.groups[0].trajectories] == [1.0, 0.0]


def slow_on_b(trajectory: tpb.Trajectory) -> float:
    """A sync custom function that hangs on the trajectory named `b`."""
    if trajectory.trajectory_id == "b":
        time.sleep(1.0)
    return 1.0 if trajectory.success else 0.0


async def test_a_custom_function_that_times_out_fails_only_its_trajectory(tmp_path):
    from cohort.api.reward.v1 import reward_pb2 as rpb
    from cohort.platform.context import Identity, current_identity
    from cohort.platform.storage import open_database

    database = await open_database(f"sqlite+aiosqlite:///{tmp_path}/reward.db")
    current_identity.set(Identity("tenant", "key", is_admin=True))
    try:
        registry = RewardFunctionRegistry(database, call_timeout_seconds=0.1)
        slow = RewardFunction("slow", FunctionKind.PYTHON, entry_point="test_reward_scoring:slow_on_b")
        await registry.register("tenant", rpb.RegisterRewardFunctionRequest(), slow, is_admin=True)
        spec = RewardSpec(outcome_weight=0.0, custom_functions=(WeightedFunction("slow", 1.0),))
        group = GroupInput("g", [make("a", success=True), make("b"), make("c", success=False)])
        result = await RewardScorer(registry).score_groups("tenant", [group], reward=spec)
        a, b, c = result.groups[0].trajectories
        assert b.error is not None and b.error.reason == "REWARD_FUNCTION_TIMEOUT"
        assert (a.reward, c.reward) == (1.0, 0.0)
        assert result.groups[0].size == 2
        with pytest.raises(NotFound):
            await RewardScorer(registry).score_groups("other-tenant", [group], reward=spec)
    finally:
        await database.close()


def test_scores_are_applied_to_the_trajectories_decisions():
    from cohort.api.reward.v1 import reward_pb2 as rpb
    from cohort.services.reward.apply import apply_scores
    from cohort.services.reward.servicer import score_groups_response

    trajectories = [
        make("a", success=True, decisions_at=[1, 1]),
        make("b", success=False, decisions_at=[1]),
        make("c", termination=tpb.TERMINATION_REASON_ERROR, decisions_at=[1]),
    ]
    result = run([GroupInput("g", trajectories)], failure_policy=FailurePolicy.DROP)
    response = score_groups_response(result)
    assert rpb.ScoreGroupsResponse.FromString(response.SerializeToString()) == response
    assert apply_scores(trajectories, response) == 2
    a, b, c = trajectories
    assert [d.advantage for d in a.decisions] == pytest.approx([1.0, 1.0], rel=1e-5)
    assert [d.advantage for d in b.decisions] == pytest.approx([-1.0], rel=1e-5)
    assert (a.reward, a.reward_components[0].name) == (1.0, "outcome")
    assert not c.HasField("advantage") and not c.decisions[0].HasField("advantage")


def test_gamma_zero_is_asked_for_only_by_setting_it():
    from cohort.api.reward.v1 import reward_pb2
    from cohort.services.reward.servicer import advantage_spec_from_proto

    assert advantage_spec_from_proto(reward_pb2.AdvantageConfig()).gamma == 1.0
    assert advantage_spec_from_proto(reward_pb2.AdvantageConfig(gamma=0.0)).gamma == 0.0
    # gamma 0: each step's return is its own reward
    rewards = np.array([[1.0, 0.0, 2.0]])
    assert advantages.discounted_returns(rewards, 0.0).tolist() == [[1.0, 0.0, 2.0]]
