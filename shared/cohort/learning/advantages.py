"""Advantage estimators over flat arrays of a batch of groups, one function per paper term.

Rewards arrive flat (one entry per trajectory) with `group_index` saying which group each belongs to,
so every estimator is a few vectorized operations over the whole batch (`np.bincount` per group):

- `group_statistics`: per group mean, population standard deviation and size.
- `grpo_advantages`: GRPO's outcome supervision (Shao et al., 2024, "DeepSeekMath", section 4.1.2),
  `(r - mean_group) / (std_group + epsilon)`.
- `dr_grpo_advantages`: Dr. GRPO (Liu et al., 2025, "Understanding R1-Zero-Like Training"),
  `r - mean_group`, without the division by the standard deviation.
- `ADVANTAGE_ESTIMATORS`: the two above by name (`"grpo"`, `"dr_grpo"`), one signature for both.
- `flow_grpo_broadcast`: Flow-GRPO's credit assignment (Li et al., 2025, "In-the-Flow Agentic System
  Optimization"), the trajectory's advantage broadcast to every decision.
- `discounted_returns`, `step_reward_matrix`, `discounted_decision_returns`: credit by the discounted
  return `G_t` from each decision's step, normalized by the same estimators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cohort.learning.arrays import FloatArray, IndexArray, Int64Array

DEFAULT_EPSILON = 1e-6
DEFAULT_GAMMA = 1.0


def group_statistics(
    values: FloatArray, group_index: IndexArray, group_count: int
) -> tuple[FloatArray, FloatArray, Int64Array]:
    """Per group: mean, population standard deviation and size of `values` (grouped by `group_index`)."""
    size = np.bincount(group_index, minlength=group_count).astype(np.float64)
    safe = np.maximum(size, 1.0)
    mean = np.bincount(group_index, weights=values, minlength=group_count) / safe
    centered = values - mean[group_index]
    variance = np.bincount(group_index, weights=centered * centered, minlength=group_count) / safe
    return mean, np.sqrt(variance), size.astype(np.int64)


def grpo_advantages(
    values: FloatArray,
    group_index: IndexArray,
    mean: FloatArray,
    std: FloatArray,
    epsilon: float = DEFAULT_EPSILON,
) -> FloatArray:
    """GRPO (Shao et al., 2024): `(r - mean_group) / (std_group + epsilon)`."""
    return (values - mean[group_index]) / (std[group_index] + epsilon)


def dr_grpo_advantages(
    values: FloatArray,
    group_index: IndexArray,
    mean: FloatArray,
    std: FloatArray | None = None,
    epsilon: float = DEFAULT_EPSILON,
) -> FloatArray:
    """Dr. GRPO (Liu et al., 2025): `r - mean_group`, no division by the standard deviation.

    `std` and `epsilon` are taken and ignored so that every entry of `ADVANTAGE_ESTIMATORS` is
    called the same way."""
    return values - mean[group_index]


AdvantageEstimator = Callable[[FloatArray, IndexArray, FloatArray, FloatArray, float], FloatArray]
"""`(values, group_index, mean, std, epsilon) -> advantages`, with the group statistics of `values`."""

ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
}


def flow_grpo_broadcast(trajectory_advantages: FloatArray, decision_counts: IndexArray) -> FloatArray:
    """Flow-GRPO: every decision of a trajectory gets the trajectory's advantage (flat, in order)."""
    return np.repeat(trajectory_advantages, decision_counts)


def discounted_returns(rewards: FloatArray, gamma: float) -> FloatArray:
    """`G[:, t] = sum_k>=t gamma^(k-t) rewards[:, k]` for a (trajectories x steps) matrix, zero-padded."""
    returns = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[0], dtype=rewards.dtype)
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns


def step_reward_matrix(step_rewards: Sequence[Sequence[float]], final_rewards: FloatArray) -> FloatArray:
    """Rewards per (trajectory, step): each step's own reward, the trajectory reward added at its last
    step (a trajectory without steps gets it at step 0); zero-padded to the longest trajectory."""
    lengths = np.fromiter((max(1, len(r)) for r in step_rewards), dtype=np.int64, count=len(step_rewards))
    matrix = np.zeros((len(step_rewards), int(lengths.max(initial=1))))
    for row, rewards in enumerate(step_rewards):
        matrix[row, : len(rewards)] = rewards
    matrix[np.arange(len(step_rewards)), lengths - 1] += final_rewards
    return matrix


def discounted_decision_returns(
    step_rewards: Sequence[Sequence[float]],
    final_rewards: FloatArray,
    decision_steps: Sequence[IndexArray],
    gamma: float,
) -> tuple[FloatArray, FloatArray]:
    """Discounted returns from the start of each trajectory, and from the step of each decision (flat).

    `decision_steps[i]` holds the step index (0-based, in `step_rewards[i]`) of each decision of
    trajectory i; an index past the last step is clipped to it.
    """
    returns = discounted_returns(step_reward_matrix(step_rewards, final_rewards), gamma)
    counts = [len(steps) for steps in decision_steps]
    if sum(counts) == 0:
        return returns[:, 0].copy(), np.zeros(0)
    rows = np.repeat(np.arange(len(decision_steps)), counts)
    lengths = np.fromiter((max(1, len(r)) for r in step_rewards), dtype=np.int64, count=len(step_rewards))
    columns = np.minimum(np.concatenate(decision_steps), lengths[rows] - 1)
    return returns[:, 0].copy(), returns[rows, columns]
