"""ε-mixing exploration and offering some of a head's options (issue 20): the decision records the
mixture it was drawn from, so GRPO's ratio pi_new / q stays exact; the toolbench agent's rule of not
offering a tool again right after it failed; the job's exploration schedule and its validation."""

from __future__ import annotations

import math
from bisect import bisect_right
from decimal import Decimal, localcontext
from itertools import accumulate, pairwise

import numpy as np
import pytest
from unit.test_decide_reference import reference_decide

from cohort.api.jobs.v1 import jobs_pb2
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.learning import (
    OPTION_SEPARATOR,
    GrpoSettings,
    HeadBatch,
    bucket,
    grpo_loss,
    log_probabilities,
    mixture_log_probabilities,
)
from cohort.platform.config import Settings
from cohort.platform.errors import InvalidArgument
from cohort.policy import HeadSpec, LocalDecider, PolicySnapshot, encode_batch
from cohort.policy.snapshot import _seeded_uniform, check_recorded_decision
from cohort.sdk import toolbench
from cohort.sdk.recorder import TrajectoryRecorder
from cohort.sdk.runtime import AgentContext, DecisionRequest
from cohort.sdk.trajectories.cohort_block import apply_cohort, cohort_section
from cohort.services.jobs.exploration import exploration_epsilon
from cohort.services.jobs.spec import normalize_job_spec

TOOLS = ("search", "calc", "lookup", "browse", "answer")
FEATURES = {"intent=math": 1.0, "progress": 2.0, "noise": -0.75}


def snapshot(seed: int = 5, scale: float = 2.0, temperature: float = 0.8) -> PolicySnapshot:
    rng = np.random.default_rng(seed)
    heads = {"tool": HeadSpec("tool", TOOLS, 64, temperature), "pick": HeadSpec("pick", (), 64, 1.3)}
    return PolicySnapshot("pol", 3, heads, {name: rng.normal(scale=scale, size=64) for name in heads})


def brute_force_q(policy: PolicySnapshot, head: str, options, features, epsilon: float) -> list[Decimal]:
    """q = (1 - ε) pi + ε / n in 60-digit decimal arithmetic, straight from the features formula."""
    spec, weights = policy.heads[head], policy.weights[head]
    with localcontext() as context:
        context.prec = 60
        logits = []
        for option in options:
            prefix = option + OPTION_SEPARATOR
            logit = Decimal(float(weights[bucket(prefix, spec.feature_buckets)]))
            for name, value in features.items():
                logit += Decimal(float(weights[bucket(prefix + name, spec.feature_buckets)])) * Decimal(value)
            logits.append(logit / Decimal(spec.temperature))
        top = max(logits)
        exponentials = [(logit - top).exp() for logit in logits]
        total = sum(exponentials)
        keep, floor = 1 - Decimal(epsilon), Decimal(epsilon) / len(options)
        return [keep * e / total + floor for e in exponentials]


def ln(value: Decimal) -> float:
    with localcontext() as context:
        context.prec = 60
        return float(value.ln())


def without_timestamp(decision):
    decision.ClearField("timestamp")
    return decision


# --- the mixture ------------------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [1e-9, 0.05, 0.3, 0.9, 0.999])
@pytest.mark.parametrize(("head", "options"), [("tool", ()), ("pick", ("x", "y", "z")), ("tool", TOOLS[1:4])])
def test_sampled_decisions_record_the_exact_mixture(head, options, epsilon):
    policy = snapshot()
    for seed in range(40):
        decision = policy.decide(DecisionRequest(head, FEATURES, options, seed=seed, exploration=epsilon))
        offered = options or TOOLS
        q = brute_force_q(policy, head, offered, FEATURES, epsilon)
        assert list(decision.options) == list(offered)
        assert decision.exploration == epsilon and not decision.greedy
        assert decision.log_prob == pytest.approx(ln(q[decision.chosen_index]), rel=1e-12, abs=1e-12)
        assert list(decision.probabilities) == pytest.approx([float(p) for p in q], rel=1e-12, abs=1e-15)
        assert math.fsum(decision.probabilities) == pytest.approx(1.0, abs=1e-12)
        assert decision.log_prob == pytest.approx(math.log(decision.probabilities[decision.chosen_index]))


def test_an_option_whose_policy_probability_underflows_keeps_its_exact_floor():
    policy = snapshot(scale=400.0, temperature=0.01)  # logits thousands apart: pi underflows to 0
    assert 0.0 in policy.decide(DecisionRequest("tool", FEATURES, greedy=True)).probabilities
    decision = policy.decide(DecisionRequest("tool", FEATURES, seed=1, exploration=1e-6))
    q = brute_force_q(policy, "tool", TOOLS, FEATURES, 1e-6)
    for value, expected in zip(decision.probabilities, q, strict=True):
        assert value == pytest.approx(float(expected), rel=1e-12)
    assert min(decision.probabilities) == pytest.approx(1e-6 / len(TOOLS), rel=1e-12)
    assert all(value <= 0.0 for value in mixture_log_probabilities([0.0], 0.5))  # n = 1: q = 1, log 0


def test_sampling_frequencies_match_the_mixture_and_the_draw_is_the_seeded_one():
    policy = snapshot(seed=9, scale=3.0)
    epsilon, draws = 0.3, 20_000
    q = [float(p) for p in brute_force_q(policy, "tool", TOOLS, FEATURES, epsilon)]
    pi = [float(p) for p in brute_force_q(policy, "tool", TOOLS, FEATURES, 0.0)]
    counts = [0] * len(TOOLS)
    cumulative = list(accumulate(q))
    for seed in range(draws):
        decision = policy.decide(DecisionRequest("tool", FEATURES, seed=seed, exploration=epsilon))
        counts[decision.chosen_index] += 1
        if seed < 500:  # the same uniform draw as without exploration, on q's cumulative sums
            expected = min(bisect_right(cumulative, _seeded_uniform(seed) * cumulative[-1]), len(TOOLS) - 1)
            assert decision.chosen_index == expected
    for count, share in zip(counts, q, strict=True):
        assert abs(count / draws - share) <= 5 * math.sqrt(share * (1 - share) / draws) + 1e-9
    # The mixture is not the policy: the least likely option is drawn far more often than pi says.
    rare = int(np.argmin(pi))
    assert counts[rare] / draws > pi[rare] + 0.03


def test_no_exploration_is_todays_decision_bit_for_bit():
    policy = snapshot()
    for seed in range(200):
        for request in (
            DecisionRequest("tool", FEATURES, seed=seed),
            DecisionRequest("pick", FEATURES, ("p", "q", "r", "s"), seed=seed * 7919),
        ):
            explicit = DecisionRequest(**{**request.__dict__, "exploration": 0.0})
            decided = without_timestamp(policy.decide(explicit))
            assert decided.SerializeToString() == reference_decide(policy, request).SerializeToString()
            assert decided.exploration == 0.0


def test_greedy_decisions_ignore_exploration_and_record_zero():
    policy = snapshot()
    for options in ((), TOOLS[2:], ("m", "n")):
        head = "pick" if options == ("m", "n") else "tool"
        plain = without_timestamp(policy.decide(DecisionRequest(head, FEATURES, options, greedy=True)))
        explored = without_timestamp(
            policy.decide(DecisionRequest(head, FEATURES, options, greedy=True, exploration=0.7))
        )
        assert explored.SerializeToString() == plain.SerializeToString()
        assert explored.exploration == 0.0 and explored.greedy


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, math.nan, math.inf, -math.inf, "lots", None])
@pytest.mark.parametrize("greedy", [False, True])
def test_exploration_outside_zero_one_is_refused_naming_the_field(bad, greedy):
    if bad is None:
        bad = object()
    with pytest.raises(InvalidArgument) as caught:
        snapshot().decide(DecisionRequest("tool", FEATURES, seed=1, greedy=greedy, exploration=bad))
    assert caught.value.field == "exploration"


# --- GRPO on mixture-sampled decisions -------------------------------------------------------------


def test_grpo_ratio_on_mixture_sampled_decisions_is_pi_over_q():
    policy = snapshot(seed=21, scale=1.5)
    head = policy.heads["tool"]
    epsilon = 0.4
    decisions = [
        policy.decide(DecisionRequest("tool", FEATURES, options, seed=seed, exploration=epsilon))
        for seed, options in enumerate([(), (), TOOLS[1:], (), ("search", "answer"), (), TOOLS[:3], ()])
    ]
    advantages = np.array([1.0, -1.0, 0.5, 2.0, -0.5, 1.5, -2.0, 0.25])
    settings = GrpoSettings()
    terms = grpo_loss(
        {"tool": policy.weights["tool"]},
        {
            "tool": HeadBatch(
                batch=encode_batch(head, decisions),
                old_log_prob=np.array([d.log_prob for d in decisions]),
                advantage=advantages,
            )
        },
        settings,
    )
    # By hand: the update's weights are the sampling weights, so rho = pi(chosen) / q(chosen).
    expected, ratios = [], []
    for decision, advantage in zip(decisions, advantages, strict=True):
        options = tuple(decision.options)
        pi = brute_force_q(policy, "tool", options, FEATURES, 0.0)[decision.chosen_index]
        q = brute_force_q(policy, "tool", options, FEATURES, epsilon)[decision.chosen_index]
        rho = float(pi / q)
        ratios.append(rho)
        clipped = min(max(rho, 1 - settings.clip_epsilon_low), 1 + settings.clip_epsilon_high)
        expected.append(-min(rho * advantage, clipped * advantage))
    assert max(abs(rho - 1) for rho in ratios) > 0.1  # the mixture moved the ratios off 1
    assert terms.loss == pytest.approx(float(np.mean(expected)), rel=1e-12)
    assert terms.decisions == len(decisions)


# --- some of a head's options -------------------------------------------------------------------


def test_a_fixed_options_head_takes_a_subset_in_its_order():
    policy = snapshot()
    subset = ("calc", "browse", "answer")
    for seed in range(30):
        decision = policy.decide(DecisionRequest("tool", FEATURES, subset, seed=seed))
        assert tuple(decision.options) == subset and decision.chosen in subset
        pi = brute_force_q(policy, "tool", subset, FEATURES, 0.0)
        assert decision.log_prob == pytest.approx(ln(pi[decision.chosen_index]), abs=1e-12)
        assert math.fsum(decision.probabilities) == pytest.approx(1.0, abs=1e-12)
    # all of them, in order, is the full head (as is none)
    full = without_timestamp(policy.decide(DecisionRequest("tool", FEATURES, TOOLS, seed=4)))
    none = without_timestamp(policy.decide(DecisionRequest("tool", FEATURES, (), seed=4)))
    assert full.SerializeToString() == none.SerializeToString()


@pytest.mark.parametrize(
    ("options", "why"),
    [
        (("calc", "search"), "out of order"),
        (("calc", "calc"), "out of order or repeated"),
        (("calc", "telnet"), "'telnet' is not one of them"),
        (("calc", 3), "3 is not one of them"),
        (("calc", ["x"]), "not one of them"),
    ],
)
def test_anything_but_an_ordered_subset_is_refused_naming_options(options, why):
    with pytest.raises(InvalidArgument) as caught:
        snapshot().decide(DecisionRequest("tool", FEATURES, options, seed=1))
    assert caught.value.field == "options"
    assert why in caught.value.message


def test_subset_decisions_train_on_exactly_the_options_they_offered():
    policy = snapshot(seed=33)
    head = policy.heads["tool"]
    decisions = [
        policy.decide(DecisionRequest("tool", FEATURES, options, seed=seed))
        for seed, options in enumerate([(), ("lookup", "answer"), TOOLS[:4], ("search",), ()])
    ]
    for i, decision in enumerate(decisions):
        checked = check_recorded_decision(head, decision, f"decisions[{i}]")
        assert checked[0] == tuple(decision.options)
    batch = encode_batch(head, decisions)
    assert batch.option_mask.sum(axis=1).tolist() == [5, 2, 4, 1, 5]
    recomputed = log_probabilities(policy.weights["tool"], batch)
    for row, decision in zip(recomputed, decisions, strict=True):
        offered = len(decision.options)
        assert np.exp(row[:offered]) == pytest.approx(list(decision.probabilities), abs=1e-12)
        assert np.all(np.isneginf(row[offered:]))
    # At the sampling weights every ratio is 1: the loss is minus the mean advantage, exactly.
    advantages = np.array([1.0, -2.0, 0.5, 3.0, -1.0])
    terms = grpo_loss(
        {"tool": policy.weights["tool"]},
        {
            "tool": HeadBatch(
                batch=batch, old_log_prob=np.array([d.log_prob for d in decisions]), advantage=advantages
            )
        },
        GrpoSettings(),
    )
    assert terms.loss == pytest.approx(-advantages.mean(), abs=1e-12)


# --- the toolbench rule -----------------------------------------------------------------------------


def toolbench_policy(bias: dict[str, float] | None = None) -> PolicySnapshot:
    heads = {spec.name: HeadSpec.from_proto(spec) for spec in toolbench.policy_heads()}
    weights = np.zeros(heads[toolbench.HEAD].feature_buckets)
    for option, value in (bias or {}).items():
        weights[bucket(option + OPTION_SEPARATOR, len(weights))] = value
    return PolicySnapshot("tb", 1, heads, {toolbench.HEAD: weights})


async def run_agent(options: toolbench.ToolbenchOptions, policy: PolicySnapshot, query, seed: int):
    context = AgentContext(toolbench.task_from_query(query), decider=LocalDecider(policy), seed=seed)
    result = await toolbench.make_agent(options)(toolbench.task_from_query(query), context)
    return context.decisions, result


def failed_then_next(decisions):
    """(failed decision, the next one) pairs: a failed call leaves the features as they were."""
    return [
        (before, after)
        for before, after in pairwise(decisions)
        if before.chosen != toolbench.ANSWER and dict(before.features) == dict(after.features)
    ]


async def test_a_policy_stuck_on_a_failing_tool_repeats_it_unless_the_option_is_on():
    # `verify` fails on a plain look-up question (nothing computed to verify); the policy loves it.
    policy = toolbench_policy({"verify": 8.0, "kb_lookup": 4.0, toolbench.ANSWER: 2.0})
    query = next(q for q in toolbench.generate_queries("train", 60, seed=2) if "capital" in q.text.lower())
    stuck, _ = await run_agent(toolbench.ToolbenchOptions(), policy, query, seed=1)
    assert [d.chosen for d in stuck].count("verify") >= 3  # without the rule it keeps failing

    decisions, _ = await run_agent(
        toolbench.ToolbenchOptions(avoid_repeating_failed_calls=True), policy, query, seed=1
    )
    pairs = failed_then_next(decisions)
    assert pairs and decisions[0].chosen == "verify"
    for before, after in pairs:
        assert before.chosen not in after.options and after.chosen != before.chosen
        assert tuple(after.options) == tuple(o for o in toolbench.TOOL_OPTIONS if o != before.chosen)


async def test_with_the_option_no_rollout_repeats_a_just_failed_tool():
    policy = toolbench_policy()  # uniform: many failed calls
    queries = toolbench.generate_queries("train", 40, seed=7)
    options = toolbench.ToolbenchOptions(avoid_repeating_failed_calls=True)
    failures = 0
    for seed, query in enumerate(queries):
        decisions, _ = await run_agent(options, policy, query, seed)
        for before, after in failed_then_next(decisions):
            failures += 1
            assert before.chosen not in after.options
        # a call that succeeded (or the first decision) offers every option again
        for i, decision in enumerate(decisions):
            if i == 0 or dict(decisions[i - 1].features) != dict(decision.features):
                assert tuple(decision.options) == toolbench.TOOL_OPTIONS
    assert failures > 20


def test_the_toolbench_option_must_be_a_bool():
    with pytest.raises(InvalidArgument) as caught:
        toolbench.ToolbenchOptions(avoid_repeating_failed_calls="yes")
    assert caught.value.field == "avoid_repeating_failed_calls"
    assert toolbench.ToolbenchOptions().avoid_repeating_failed_calls is False  # off by default


# --- the schedule and the job spec ----------------------------------------------------------------


def test_exploration_schedule_decays_linearly_to_zero():
    assert [exploration_epsilon(0.2, 0, i) for i in (0, 1, 50, 10_000)] == [0.2] * 4
    assert [exploration_epsilon(0.4, 4, i) for i in range(7)] == pytest.approx([0.4, 0.3, 0.2, 0.1, 0, 0, 0])
    assert exploration_epsilon(0.4, 4, 4) == 0.0
    assert [exploration_epsilon(0.0, 5, i) for i in range(3)] == [0.0] * 3
    assert exploration_epsilon(0.5, 1, 0) == 0.5 and exploration_epsilon(0.5, 1, 1) == 0.0


def spec(**exploration) -> jobs_pb2.JobSpec:
    result = jobs_pb2.JobSpec(iterations=2, exploration=jobs_pb2.Exploration(**exploration))
    result.runtime.toolbench.SetInParent()
    result.dataset.toolbench.train_count = 10
    result.policy.new_policy.SetInParent()
    return result


@pytest.mark.parametrize(
    ("exploration", "field"),
    [
        ({"epsilon": -0.01}, "job.spec.exploration.epsilon"),
        ({"epsilon": 1.0}, "job.spec.exploration.epsilon"),
        ({"epsilon": math.nan}, "job.spec.exploration.epsilon"),
        ({"epsilon": math.inf}, "job.spec.exploration.epsilon"),
        ({"epsilon": 0.1, "decay_iterations": -1}, "job.spec.exploration.decay_iterations"),
    ],
)
def test_the_job_spec_refuses_bad_exploration_naming_the_field(exploration, field):
    with pytest.raises(InvalidArgument) as caught:
        normalize_job_spec(spec(**exploration), Settings())
    assert caught.value.field == field


def test_the_job_spec_keeps_exploration_and_defaults_it_off():
    kept = normalize_job_spec(spec(epsilon=0.25, decay_iterations=30), Settings())
    assert (kept.exploration.epsilon, kept.exploration.decay_iterations) == (0.25, 30)
    off = normalize_job_spec(spec(), Settings())
    assert not off.HasField("exploration") or off.exploration.epsilon == 0.0


# --- recording ----------------------------------------------------------------------------------


def test_a_recorded_decision_keeps_its_exploration_through_files_and_back():
    recorder = TrajectoryRecorder(sink="memory", trajectory_id="explored")
    recorder.start_recording("task", "p", "m", 3)
    recorder.record_decision("tool", ["a", "b"], 1, math.log(0.4), probabilities=[0.6, 0.4], exploration=0.2)
    recorder.record_decision("tool", ["a", "b"], 0, math.log(0.7), probabilities=[0.7, 0.3])
    with pytest.raises(InvalidArgument) as caught:
        recorder.record_decision("tool", ["a", "b"], 0, -0.1, exploration=1.0)
    assert caught.value.field == "exploration"
    recorder.finalize_recording(True, "done")
    trajectory = recorder.trajectory
    assert [d.exploration for d in trajectory.decisions] == [0.2, 0.0]
    section = cohort_section(trajectory)
    assert section["decisions"][0]["exploration"] == 0.2
    assert "exploration" not in section["decisions"][1]  # files without exploration keep their keys
    again = tpb.Trajectory()
    apply_cohort(again, section)
    assert [d.exploration for d in again.decisions] == [0.2, 0.0]
