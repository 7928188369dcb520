"""Writing a `ScoreGroups` answer onto the scored trajectories, for the trainer and the job manager.

`ScoreGroupsResponse` carries scores, not trajectories (sending 100s of KiB back would double the
cost of the call), so a caller that holds the trajectories applies the scores to them: `reward`,
`reward_components`, `advantage`, and `Decision.advantage` on every decision, which is what the
trainer's GRPO update reads.
"""

from __future__ import annotations

from collections.abc import Iterable

from cohort.api.reward.v1 import reward_pb2 as rpb
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb


def apply_score(trajectory: tpb.Trajectory, score: rpb.TrajectoryScore) -> bool:
    """Writes `score` onto `trajectory`; False (nothing written) when the score failed or the failure
    policy dropped the trajectory. Raises `ValueError` when the score does not fit the trajectory."""
    if score.trajectory_id != trajectory.trajectory_id:
        raise ValueError(f"score of {score.trajectory_id!r} applied to {trajectory.trajectory_id!r}")
    if score.HasField("error") or score.dropped:
        return False
    if len(score.decision_advantages) != len(trajectory.decisions):
        raise ValueError(
            f"{trajectory.trajectory_id!r}: {len(score.decision_advantages)} decision advantages "
            f"for {len(trajectory.decisions)} decisions"
        )
    trajectory.reward = score.reward
    del trajectory.reward_components[:]
    trajectory.reward_components.extend(score.components)
    trajectory.advantage = score.advantage
    for decision, advantage in zip(trajectory.decisions, score.decision_advantages, strict=True):
        decision.advantage = advantage
    return True


def apply_group_scores(
    trajectories: Iterable[tpb.Trajectory], response: rpb.ScoreGroupsResponse
) -> list[tuple[rpb.GroupScore, tpb.Trajectory]]:
    """Applies every score of `response` to the trajectory with its id; each trajectory a score was
    written onto, with the score of its group (whether the group was dropped, for instance)."""
    by_id = {t.trajectory_id: t for t in trajectories}
    applied = []
    for group in response.groups:
        for score in group.trajectories:
            trajectory = by_id.get(score.trajectory_id)
            if trajectory is not None and apply_score(trajectory, score):
                applied.append((group, trajectory))
    return applied


def apply_scores(trajectories: Iterable[tpb.Trajectory], response: rpb.ScoreGroupsResponse) -> int:
    """Applies every score of `response` to the trajectory with its id; the number applied."""
    return len(apply_group_scores(trajectories, response))
