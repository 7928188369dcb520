"""Checkpoint retention: the latest and the best K by a declared metric survive, nothing else."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from cohort.services.checkpoint.retention import (
    DEFAULT_KEEP_BEST,
    DEFAULT_METRIC,
    Direction,
    RetainedCheckpoint,
    RetentionPolicy,
    best_checkpoints,
    checkpoints_to_delete,
    checkpoints_to_keep,
)


def history_of(values: list[float | None], metric: str = "reward_mean") -> list[RetainedCheckpoint]:
    return [
        RetainedCheckpoint(f"c{i}", {} if value is None else {metric: value})
        for i, value in enumerate(values)
    ]


def test_defaults_are_five_best_by_reward_mean_maximized():
    policy = RetentionPolicy()
    assert (policy.keep_best, policy.metric, policy.direction) == (
        DEFAULT_KEEP_BEST,
        DEFAULT_METRIC,
        Direction.MAXIMIZE,
    )
    assert DEFAULT_KEEP_BEST == 5 and DEFAULT_METRIC == "reward_mean"


def test_keeps_the_latest_and_the_best_k_when_maximizing():
    history = history_of([0.5, 0.9, 0.1, 0.7, 0.2, 0.3])
    policy = RetentionPolicy(keep_best=2, direction=Direction.MAXIMIZE)
    assert best_checkpoints(history, policy) == ["c1", "c3"]
    assert checkpoints_to_keep(history, policy) == {"c1", "c3", "c5"}
    assert checkpoints_to_delete(history, policy) == ["c0", "c2", "c4"]


def test_minimizing_keeps_the_lowest():
    history = history_of([0.5, 0.9, 0.1, 0.7, 0.2, 0.3], metric="loss")
    policy = RetentionPolicy(keep_best=2, metric="loss", direction=Direction.MINIMIZE)
    assert checkpoints_to_keep(history, policy) == {"c2", "c4", "c5"}


def test_ties_prefer_the_newer_checkpoint():
    history = history_of([1.0, 1.0, 1.0, 0.0])
    assert best_checkpoints(history, RetentionPolicy(keep_best=2)) == ["c2", "c1"]


def test_checkpoints_without_the_metric_rank_last_but_still_fill_free_slots_newest_first():
    history = history_of([None, 0.2, None, None, 0.1])
    assert best_checkpoints(history, RetentionPolicy(keep_best=4)) == ["c1", "c4", "c3", "c2"]
    assert checkpoints_to_delete(history, RetentionPolicy(keep_best=4)) == ["c0"]


def test_the_latest_survives_even_when_it_is_the_worst():
    history = history_of([0.9, 0.8, 0.7, -5.0])
    assert checkpoints_to_delete(history, RetentionPolicy(keep_best=1)) == ["c1", "c2"]


def test_empty_history_deletes_nothing():
    assert checkpoints_to_delete([], RetentionPolicy()) == []


# --- Properties -------------------------------------------------------------------------------------

metric_values = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    st.sampled_from([0.0, 1.0, 0.5]),  # ties are common in practice (success rates)
)
policies = st.builds(
    RetentionPolicy,
    keep_best=st.integers(min_value=1, max_value=8),
    metric=st.just("score"),
    direction=st.sampled_from(list(Direction)),
)


def brute_force_best(history: list[RetainedCheckpoint], policy: RetentionPolicy) -> set[str]:
    """The best k computed independently: every pair compared, a checkpoint is in the best k when fewer
    than k others beat it."""

    def beats(a: int, b: int) -> bool:
        va, vb = history[a].metrics.get(policy.metric), history[b].metrics.get(policy.metric)
        if (va is None) != (vb is None):
            return vb is None
        if va is not None and vb is not None and va != vb:
            return va > vb if policy.direction is Direction.MAXIMIZE else va < vb
        return a > b  # newer wins a tie

    n = len(history)
    return {
        history[i].checkpoint_id
        for i in range(n)
        if sum(1 for j in range(n) if j != i and beats(j, i)) < policy.keep_best
    }


@settings(max_examples=150, deadline=None)
@given(values=st.lists(metric_values, min_size=1, max_size=40), policy=policies)
def test_latest_and_best_k_are_always_kept_and_only_they(values, policy):
    history = history_of(values, metric="score")
    deleted = checkpoints_to_delete(history, policy)
    kept = checkpoints_to_keep(history, policy)
    ids = [c.checkpoint_id for c in history]

    assert history[-1].checkpoint_id not in deleted  # the checkpoint just committed
    assert kept == {history[-1].checkpoint_id} | brute_force_best(history, policy)
    assert set(deleted) | kept == set(ids) and not set(deleted) & kept
    assert deleted == [i for i in ids if i in set(deleted)]  # oldest first
    assert len(kept) <= policy.keep_best + 1


@settings(max_examples=100, deadline=None)
@given(values=st.lists(metric_values, min_size=1, max_size=25), policy=policies)
def test_applied_after_every_save_survivors_are_the_latest_and_best_k_of_everything_saved(values, policy):
    """The service applies retention after each commit, to the survivors only; that must equal
    applying it once to the full history."""
    survivors: list[RetainedCheckpoint] = []
    saved: list[RetainedCheckpoint] = []
    for checkpoint in history_of(values, metric="score"):
        saved.append(checkpoint)
        survivors.append(checkpoint)
        deleted = set(checkpoints_to_delete(survivors, policy))
        assert checkpoint.checkpoint_id not in deleted
        survivors = [c for c in survivors if c.checkpoint_id not in deleted]
        expected = {saved[-1].checkpoint_id} | brute_force_best(saved, policy)
        assert {c.checkpoint_id for c in survivors} == expected


@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=10))
def test_non_finite_values_count_as_missing(values):
    history = history_of(values, metric="score")
    policy = RetentionPolicy(keep_best=len(values), metric="score")
    best = best_checkpoints(history, policy)
    finite = [c.checkpoint_id for c in history if math.isfinite(c.metrics["score"])]
    assert set(best[: len(finite)]) == set(finite)
