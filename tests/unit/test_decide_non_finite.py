"""`PolicySnapshot.decide` never serves NaN probabilities: a version with non-finite weights (one
committed before updates were checked) is FAILED_PRECONDITION, and features that overflow finite
weights' logits are INVALID_ARGUMENT naming `features`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cohort.learning import OPTION_SEPARATOR, bucket
from cohort.platform.errors import FailedPrecondition, InvalidArgument
from cohort.policy import HeadSpec, LocalDecider, PolicySnapshot
from cohort.sdk.runtime import DecisionRequest

OPTIONS = ("search", "answer")
BUCKETS = 16


def snapshot(weights: np.ndarray) -> PolicySnapshot:
    head = HeadSpec("tool", OPTIONS, feature_buckets=BUCKETS)
    return PolicySnapshot("pol", 2, {"tool": head}, {"tool": weights})


def bias_bucket(option: str) -> int:
    return bucket(option + OPTION_SEPARATOR, BUCKETS)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("greedy", [False, True])
def test_non_finite_weights_are_refused_not_served(bad, greedy):
    weights = np.zeros(BUCKETS)
    weights[bias_bucket("answer")] = bad
    with pytest.raises(FailedPrecondition) as error:
        snapshot(weights).decide(DecisionRequest("tool", {}, greedy=greedy, seed=1))
    assert error.value.reason == "NON_FINITE_POLICY"
    assert error.value.metadata == {"policy_id": "pol", "version": "2", "head": "tool"}
    assert "non-finite weights" in error.value.message


def test_features_that_overflow_the_logits_are_invalid_argument():
    weights = np.zeros(BUCKETS)
    crossed = bucket("search" + OPTION_SEPARATOR + "x", BUCKETS)
    weights[crossed] = 1e10
    policy = snapshot(weights)
    with pytest.raises(InvalidArgument) as error:
        policy.decide(DecisionRequest("tool", {"x": 1e300}, seed=1))
    assert error.value.field == "features" and "overflow" in error.value.description
    # the same features at a scale that fits are served, with finite probabilities summing to 1
    decision = policy.decide(DecisionRequest("tool", {"x": 1e-9}, seed=1))
    assert all(math.isfinite(p) for p in decision.probabilities)
    assert math.fsum(decision.probabilities) == pytest.approx(1.0)


async def test_the_local_decider_refuses_too():
    weights = np.zeros(BUCKETS)
    weights[bias_bucket("search")] = math.nan
    with pytest.raises(FailedPrecondition):
        await LocalDecider(snapshot(weights))(DecisionRequest("tool", {}, seed=3))
