"""What a job scored goes back to the trajectory store.

`ScoreGroups` answers with scores, not trajectories, and the job applies them to its in-memory copies
for `UpdatePolicy`; without writing them back the stored trajectories would never carry a reward, so
searching by reward and exporting rewards would find nothing. `record_scores` sends every scored
trajectory's reward, components and advantages to `CollectorService.RecordScores`; `score_evaluation`
scores evaluation rollouts with the job's reward and stores those rewards too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2
from cohort.api.reward.v1 import reward_pb2, reward_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.storage import idempotency
from cohort.services.collector.store import MAX_SCORES
from cohort.services.reward.apply import apply_scores

log = logging.getLogger(__name__)


def record_scores_requests(
    scored: reward_pb2.ScoreGroupsResponse, *, job_id: str, advantages: bool = True
) -> Iterator[collector_pb2.RecordScoresRequest]:
    """`RecordScores` requests for every trajectory `scored` has a score for (a failed score, or one
    the failure policy dropped, carries none), at most `MAX_SCORES` each.

    The request id derives from the content: a retry (or a later attempt scoring the same rollouts
    the same way) replays the first answer, and a scorer that answers differently the second time
    (a nondeterministic custom function) writes its new scores instead of failing on a reused id.
    """
    scores = [
        collector_pb2.TrajectoryScore(
            trajectory_id=score.trajectory_id,
            reward=score.reward,
            components=score.components,
            advantage=score.advantage if advantages else None,
            decision_advantages=score.decision_advantages if advantages else (),
        )
        for group in scored.groups
        for score in group.trajectories
        if not score.HasField("error") and not score.dropped
    ]
    for start in range(0, len(scores), MAX_SCORES):
        request = collector_pb2.RecordScoresRequest(scores=scores[start : start + MAX_SCORES])
        request.request_id = f"{job_id[:100]}:scores:{idempotency.request_fingerprint(request)[:40]}"
        yield request


async def record_scores(
    collector: collector_pb2_grpc.CollectorServiceStub,
    scored: reward_pb2.ScoreGroupsResponse,
    *,
    job_id: str,
    advantages: bool = True,
) -> int:
    """Stores the scores; how many stored trajectories changed. A score the collector refuses (its
    trajectory is gone) is logged, not raised: training does not depend on the stored copy."""
    changed = 0
    for request in record_scores_requests(scored, job_id=job_id, advantages=advantages):
        response = await collector.RecordScores(request)
        changed += response.recorded_count
        for failure in response.failures:
            log.warning(
                "job %s: score of trajectory %s not stored: %s",
                job_id,
                failure.trajectory_id,
                failure.status.message,
            )
    return changed


async def score_evaluation(
    reward: reward_pb2_grpc.RewardServiceStub,
    collector: collector_pb2_grpc.CollectorServiceStub,
    spec: jobs_pb2.JobSpec,
    groups: Sequence[Sequence[trajectory_pb2.Trajectory]],
    *,
    job_id: str,
) -> None:
    """Scores evaluation rollouts with the job's reward, writes the rewards onto `groups` (so the
    evaluation's average reward is the job's reward) and stores reward and components. Every
    rollout is scored, failed ones as failures; advantages are not stored, since nothing trains on
    evaluation rollouts."""
    request = reward_pb2.ScoreGroupsRequest(
        groups=[
            reward_pb2.TrajectoryGroup(group_id=group[0].group_id, trajectories=group)
            for group in groups
            if group
        ],
        reward=spec.reward,
        advantage=spec.advantage,
        failure_policy=reward_pb2.FAILURE_POLICY_SCORE_AS_FAILURE,
    )
    if not request.groups:
        return
    scored = await reward.ScoreGroups(request)
    apply_scores([t for group in groups for t in group], scored)
    await record_scores(collector, scored, job_id=job_id, advantages=False)
