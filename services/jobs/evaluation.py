"""Evaluation statistics: a baseline and a candidate policy on the same held-out queries and seeds.

Rollouts are paired by (query id, rollout index): the same query under the same seed, once per
policy. The paired success difference gets a percentile-bootstrap 95% interval (resampling pairs),
and McNemar's exact test asks whether the discordant pairs (one solved, the other not) lean one way
more than chance would. Pure functions over trajectories; the runner collects them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from cohort.api.jobs.v1 import jobs_pb2
from cohort.api.trajectory.v1 import trajectory_pb2

BOOTSTRAP_RESAMPLES = 2000


def mcnemar_exact_p_value(baseline_only: int, candidate_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts (a binomial test at 1/2)."""
    discordant = baseline_only + candidate_only
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(baseline_only, candidate_only) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**discordant)))


def bootstrap_difference_interval(
    baseline: np.ndarray, candidate: np.ndarray, *, seed: int, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of mean(candidate − baseline), resampling the pairs."""
    differences = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if differences.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, differences.size, size=(resamples, differences.size))
    means = differences[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def tool_accuracy(trajectories: Sequence[trajectory_pb2.Trajectory]) -> float:
    """Fraction of tool calls whose result succeeded (1.0 when there were no tool calls)."""
    calls = succeeded = 0
    for trajectory in trajectories:
        for step in trajectory.agent_steps:
            for result in step.tool_results:
                calls += 1
                succeeded += bool(result.success)
    return succeeded / calls if calls else 1.0


def solved(trajectory: trajectory_pb2.Trajectory) -> bool:
    return trajectory.HasField("success") and trajectory.success


def reward_of(trajectory: trajectory_pb2.Trajectory) -> float:
    """The scored reward, or the outcome (1 solved, 0 not) for an unscored trajectory."""
    return trajectory.reward if trajectory.HasField("reward") else float(solved(trajectory))


def summarize(
    trajectories: Sequence[trajectory_pb2.Trajectory], policy: trajectory_pb2.PolicyRef
) -> jobs_pb2.EvaluationSummary:
    count = len(trajectories)
    return jobs_pb2.EvaluationSummary(
        policy=policy,
        success_rate=sum(map(solved, trajectories)) / count if count else 0.0,
        reward_mean=sum(map(reward_of, trajectories)) / count if count else 0.0,
        tool_accuracy=tool_accuracy(trajectories),
        steps_mean=sum(len(t.agent_steps) for t in trajectories) / count if count else 0.0,
        cost_micro_usd=sum(t.cost_micro_usd for t in trajectories),
        query_count=len({t.query_id for t in trajectories}),
    )


def pair_key(trajectory: trajectory_pb2.Trajectory) -> tuple[str, str]:
    """(query id, rollout index): which baseline rollout a candidate rollout is compared with."""
    return trajectory.query_id, trajectory.labels.get("rollout_index", "")


def compare(
    baseline: Sequence[trajectory_pb2.Trajectory],
    candidate: Sequence[trajectory_pb2.Trajectory],
    *,
    baseline_policy: trajectory_pb2.PolicyRef,
    candidate_policy: trajectory_pb2.PolicyRef,
    seed: int,
) -> jobs_pb2.Evaluation:
    """The paired comparison; rollouts present for only one policy are left out of the paired figures."""
    by_key = {pair_key(t): t for t in baseline}
    pairs = [(by_key[pair_key(t)], t) for t in candidate if pair_key(t) in by_key]
    base_solved = np.array([solved(b) for b, _ in pairs], dtype=bool)
    cand_solved = np.array([solved(c) for _, c in pairs], dtype=bool)
    low, high = bootstrap_difference_interval(base_solved, cand_solved, seed=seed)
    base_summary = summarize(baseline, baseline_policy)
    cand_summary = summarize(candidate, candidate_policy)
    return jobs_pb2.Evaluation(
        baseline=base_summary,
        candidate=cand_summary,
        success_rate_difference=float(cand_solved.mean() - base_solved.mean()) if pairs else 0.0,
        success_rate_difference_ci_low=low,
        success_rate_difference_ci_high=high,
        mcnemar_p_value=mcnemar_exact_p_value(
            int((base_solved & ~cand_solved).sum()), int((cand_solved & ~base_solved).sum())
        ),
        reward_difference=cand_summary.reward_mean - base_summary.reward_mean,
    )


def evaluation_table(evaluation: jobs_pb2.Evaluation) -> str:
    """A plain-text table of an evaluation, for the CLI and the demo."""
    base, cand = evaluation.baseline, evaluation.candidate
    rows = [
        ("", f"baseline v{base.policy.version}", f"trained v{cand.policy.version}"),
        ("success rate", f"{base.success_rate:.1%}", f"{cand.success_rate:.1%}"),
        ("average reward", f"{base.reward_mean:.3f}", f"{cand.reward_mean:.3f}"),
        ("tool accuracy", f"{base.tool_accuracy:.1%}", f"{cand.tool_accuracy:.1%}"),
        ("steps (mean)", f"{base.steps_mean:.2f}", f"{cand.steps_mean:.2f}"),
        ("cost", f"${base.cost_micro_usd / 1e6:.4f}", f"${cand.cost_micro_usd / 1e6:.4f}"),
        ("held-out queries", str(base.query_count), str(cand.query_count)),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.append(
        f"difference in success rate: {evaluation.success_rate_difference:+.1%} "
        f"(95% CI {evaluation.success_rate_difference_ci_low:+.1%} .. "
        f"{evaluation.success_rate_difference_ci_high:+.1%}), "
        f"McNemar exact p = {evaluation.mcnemar_p_value:.2g}"
    )
    return "\n".join(lines)


def evaluation_json(evaluation: jobs_pb2.Evaluation) -> str:
    from google.protobuf import json_format

    return json.dumps(json_format.MessageToDict(evaluation), indent=2)
