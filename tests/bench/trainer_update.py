"""GRPO update math: `grpo_update` on a batch the size of one job iteration.

128 trajectories x 10 decisions, each decision with 8 options and about 10 context features
(11 hashed slots per option with its bias), 4096 buckets, 4 inner epochs, KL and entropy terms on
(the most work an update does). The batch is built once, as `encode_batch` would build it; the
figure is the median time of `grpo_update` alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from figures import Figure, median_seconds  # noqa: E402

from cohort.services.trainer.grpo import AdamState, GrpoSettings, HeadBatch, grpo_update  # noqa: E402

TRAJECTORIES, DECISIONS, OPTIONS, FEATURES, BUCKETS = 128, 10, 8, 10, 4096
REPEATS = 21


def _decision_batch(**arrays):
    try:
        from cohort.policy import DecisionBatch
    except ImportError:  # cohort.policy not there yet: any object with the same fields will do
        from types import SimpleNamespace as DecisionBatch
    return DecisionBatch(**arrays)


def make_update_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    count = TRAJECTORIES * DECISIONS
    slots = FEATURES + 1
    batch = _decision_batch(
        indices=rng.integers(0, BUCKETS, size=(count, OPTIONS, slots)),
        values=np.concatenate(
            [np.ones((count, OPTIONS, 1)), rng.normal(size=(count, OPTIONS, FEATURES))], axis=2
        ),
        option_mask=np.ones((count, OPTIONS), dtype=bool),
        chosen=rng.integers(0, OPTIONS, size=count),
        temperature=1.0,
    )
    weights = {"next_tool": rng.normal(scale=0.1, size=BUCKETS)}
    old_log_prob = np.full(count, -np.log(OPTIONS)) + rng.normal(scale=0.1, size=count)
    old_log_prob = np.minimum(old_log_prob, 0.0)
    # Flow-GRPO: one advantage per trajectory, broadcast to its decisions.
    advantage = np.repeat(rng.normal(size=TRAJECTORIES), DECISIONS)
    batches = {"next_tool": HeadBatch(batch, old_log_prob, advantage, np.zeros(BUCKETS))}
    return weights, batches


def measure() -> float:
    weights, batches = make_update_inputs()
    settings = GrpoSettings(inner_epochs=4, kl_beta=0.04, entropy_coefficient=0.01)
    optimizer = AdamState.zeros(weights)
    grpo_update(weights, batches, optimizer, settings)  # warm-up
    return median_seconds(lambda: grpo_update(weights, batches, optimizer, settings), REPEATS)


def figures() -> list[Figure]:
    return [
        Figure(
            "UpdatePolicy math, 128 traj x 10 decisions x 8 options, 4 epochs, median",
            measure() * 1000,
            "ms",
            20,
        )
    ]


if __name__ == "__main__":
    for figure in figures():
        print(figure.line())
