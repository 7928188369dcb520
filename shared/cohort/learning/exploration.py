"""ε-exploration that keeps GRPO exact: the behaviour policy is the mixture
`q = (1 - ε) * pi + ε * uniform(options)`, and a decision drawn from it records `log q` as its
log-probability, so the importance ratio `pi_new / q` of the update is the true one."""

from __future__ import annotations

import math
from collections.abc import Sequence

from cohort.platform.errors import InvalidArgument


def check_exploration_rate(epsilon: float, field: str) -> float:
    """`epsilon` when it is a finite rate in [0, 1) (0: no exploration); else `InvalidArgument`
    naming `field`. The one rule for ε, wherever a request or a job spec carries one."""
    if not 0.0 <= epsilon < 1.0:  # NaN fails too
        raise InvalidArgument(field, f"must be a finite number in [0, 1) (0: off), not {epsilon}")
    return epsilon


def mixture_log_probabilities(log_probs: Sequence[float], epsilon: float) -> list[float]:
    """log q for `q = (1 - epsilon) * pi + epsilon * uniform`, from log pi over the offered options.

    Each term is summed in log space (`log(a + b) = hi + log1p(exp(lo - hi))`): an option whose pi
    underflows to 0 still gets its exact `log(epsilon / n)`, and a dominant one keeps its precision.
    Capped at 0, so rounding never makes a log-probability positive.
    """
    log_keep = math.log1p(-epsilon)
    log_floor = math.log(epsilon) - math.log(len(log_probs))
    mixed = []
    for log_prob in log_probs:
        kept = log_prob + log_keep
        high, low = (kept, log_floor) if kept > log_floor else (log_floor, kept)
        mixed.append(min(high + math.log1p(math.exp(low - high)), 0.0))
    return mixed
