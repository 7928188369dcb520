"""Evaluation statistics: McNemar's exact test, the paired bootstrap interval, summaries and pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.services.jobs import evaluation


def binomial_two_sided(k: int, n: int) -> float:
    """Reference: twice the smaller binomial(n, 1/2) tail, by direct summation of probabilities."""
    tail = sum(math.comb(n, i) * 0.5**n for i in range(0, min(k, n - k) + 1))
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("b,c", [(0, 0), (0, 10), (3, 12), (7, 7), (1, 30), (25, 5)])
def test_mcnemar_matches_the_binomial_test_on_discordant_pairs(b, c):
    expected = 1.0 if b + c == 0 else binomial_two_sided(b, b + c)
    assert evaluation.mcnemar_exact_p_value(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_known_value():
    # 0 of 10 discordant pairs favour the baseline: p = 2 / 2**10.
    assert evaluation.mcnemar_exact_p_value(0, 10) == pytest.approx(0.001953125)
    assert evaluation.mcnemar_exact_p_value(10, 0) == evaluation.mcnemar_exact_p_value(0, 10)


def test_mcnemar_large_counts_do_not_overflow():
    p = evaluation.mcnemar_exact_p_value(400, 600)
    assert 0 < p < 1e-9


def test_bootstrap_interval_contains_the_difference_and_is_reproducible():
    rng = np.random.default_rng(1)
    baseline = rng.random(200) < 0.2
    candidate = rng.random(200) < 0.8
    low, high = evaluation.bootstrap_difference_interval(baseline, candidate, seed=7)
    difference = candidate.mean() - baseline.mean()
    assert low < difference < high
    assert 0.4 < low and high < 0.8
    assert (low, high) == evaluation.bootstrap_difference_interval(baseline, candidate, seed=7)


def test_bootstrap_of_identical_outcomes_is_a_point():
    same = np.array([True, False, True, True])
    assert evaluation.bootstrap_difference_interval(same, same, seed=0) == (0.0, 0.0)


def trajectory(query: str, index: int, success: bool, steps: int = 2, failed_calls: int = 0):
    t = trajectory_pb2.Trajectory(query_id=query, success=success, cost_micro_usd=10)
    t.labels["rollout_index"] = str(index)
    for s in range(steps):
        step = t.agent_steps.add(step_number=s + 1)
        step.tool_results.add(call_id=f"c{s}", success=s >= failed_calls)
    return t


def test_compare_pairs_by_query_and_rollout_index():
    policy_a = trajectory_pb2.PolicyRef(policy_id="p", version=1)
    policy_b = trajectory_pb2.PolicyRef(policy_id="p", version=9)
    baseline = [trajectory(f"q{i}", r, success=False, failed_calls=1) for i in range(10) for r in range(2)]
    candidate = [trajectory(f"q{i}", r, success=i < 8) for i in range(10) for r in range(2)]
    result = evaluation.compare(
        baseline, list(reversed(candidate)), baseline_policy=policy_a, candidate_policy=policy_b, seed=3
    )
    assert result.baseline.success_rate == 0.0
    assert result.candidate.success_rate == pytest.approx(0.8)
    assert result.success_rate_difference == pytest.approx(0.8)
    assert result.mcnemar_p_value == pytest.approx(evaluation.mcnemar_exact_p_value(0, 16))
    assert result.success_rate_difference_ci_low <= 0.8 <= result.success_rate_difference_ci_high
    assert result.baseline.tool_accuracy == pytest.approx(0.5)
    assert result.candidate.tool_accuracy == 1.0
    assert result.baseline.query_count == 10
    assert result.candidate.policy.version == 9
    assert result.baseline.cost_micro_usd == 200
    assert "McNemar" in evaluation.evaluation_table(result)
