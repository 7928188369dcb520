"""Which checkpoints of a job survive: the latest, and the best `keep_best` by a declared metric.

Pure functions over a job's history in commit order (oldest first), so the rule can be tested on its
own. Ranking: checkpoints that carry the metric (a finite value) rank above those that do not, then
by the metric in the declared direction, then newer above older. Checkpoints without the metric
therefore still fill the best slots (newest first) when too few carry it, rather than every older
checkpoint being deleted because a job reports its metric under another name.

Applied after every save, the survivors are always exactly `{latest} ∪ best_k(everything ever
saved)`: a checkpoint outside the best k only falls further behind as more are saved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

DEFAULT_KEEP_BEST = 5
DEFAULT_METRIC = "reward_mean"
MAX_KEEP_BEST = 10_000


class Direction(Enum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


@dataclass(frozen=True)
class RetentionPolicy:
    keep_best: int = DEFAULT_KEEP_BEST
    metric: str = DEFAULT_METRIC
    direction: Direction = Direction.MAXIMIZE


@dataclass(frozen=True)
class RetainedCheckpoint:
    """What retention needs to know about one committed checkpoint."""

    checkpoint_id: str
    metrics: Mapping[str, float]


def _rank_key(position: int, checkpoint: RetainedCheckpoint, policy: RetentionPolicy) -> tuple:
    """Sort key, smallest = best: (lacks the metric, metric in direction, newer first)."""
    value = checkpoint.metrics.get(policy.metric)
    if value is None or not math.isfinite(value):
        return (1, 0.0, -position)
    signed = -value if policy.direction is Direction.MAXIMIZE else value
    return (0, signed, -position)


def best_checkpoints(history: Sequence[RetainedCheckpoint], policy: RetentionPolicy) -> list[str]:
    """Ids of the best `policy.keep_best` checkpoints of `history` (commit order), best first."""
    ranked = sorted(range(len(history)), key=lambda i: _rank_key(i, history[i], policy))
    return [history[i].checkpoint_id for i in ranked[: max(policy.keep_best, 0)]]


def checkpoints_to_keep(history: Sequence[RetainedCheckpoint], policy: RetentionPolicy) -> set[str]:
    """The latest (last of `history`) and the best `keep_best`."""
    if not history:
        return set()
    return {history[-1].checkpoint_id, *best_checkpoints(history, policy)}


def checkpoints_to_delete(history: Sequence[RetainedCheckpoint], policy: RetentionPolicy) -> list[str]:
    """Ids of the checkpoints of `history` (commit order, oldest first) that retention removes, oldest
    first. The last one, the checkpoint just committed, is never among them."""
    keep = checkpoints_to_keep(history, policy)
    return [checkpoint.checkpoint_id for checkpoint in history if checkpoint.checkpoint_id not in keep]
