"""Learning health: the measurements of an iteration, and each event fired once on crossing its
threshold and again only after it cleared."""

from __future__ import annotations

import json
import math

import pytest

from cohort.api.collector.v1 import collector_pb2
from cohort.api.jobs.v1 import jobs_pb2
from cohort.api.reward.v1 import reward_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.config import Settings
from cohort.platform.errors import InvalidArgument
from cohort.services.jobs import health
from cohort.services.jobs.health import (
    EntropyStats,
    EventKind,
    GroupOutcome,
    HealthState,
    Observation,
    Thresholds,
    decision_entropy,
    entropy_stats,
    observe,
)
from cohort.services.jobs.spec import validate_new_job

LIMITS = Thresholds(
    min_relative_entropy=0.1,
    entropy_success_ceiling=0.9,
    max_failed_zero_variance_share=0.5,
    stuck_iterations=3,
)
HEALTHY_ENTROPY = EntropyStats(decisions=10, mean=1.0, relative_mean=0.8)


def measured(
    iteration: int,
    *,
    groups: tuple[GroupOutcome, ...] = (),
    strata: dict[str, tuple[int, int]] | None = None,
    entropy: EntropyStats = HEALTHY_ENTROPY,
    success_rate: float = 0.5,
    update_norm: float = 1.0,
) -> Observation:
    return Observation(
        iteration=iteration,
        groups=groups,
        strata=strata or {},
        entropy=entropy,
        success_rate=success_rate,
        update_norm=update_norm,
    )


def kinds(events) -> list[EventKind]:
    return [event.kind for event in events]


# -- entropy ----------------------------------------------------------------------------------------


def test_decision_entropy_matches_a_hand_computation():
    # H([1/2, 1/4, 1/4]) = 1/2 ln 2 + 2 * 1/4 ln 4 = 3/2 ln 2.
    nats, relative = decision_entropy([0.5, 0.25, 0.25])
    assert nats == pytest.approx(1.5 * math.log(2), rel=1e-12)
    assert relative == pytest.approx(1.5 * math.log(2) / math.log(3), rel=1e-12)


def test_exploration_mixed_into_the_recorded_distribution_is_taken_out():
    pi = [0.7, 0.2, 0.1]
    epsilon = 0.3
    recorded = [(1 - epsilon) * p + epsilon / 3 for p in pi]
    by_hand = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    nats, _ = decision_entropy(recorded, epsilon)
    assert nats == pytest.approx(by_hand, rel=1e-9)
    # Read as the policy's own, the mixture would look far more exploratory than the policy is.
    assert decision_entropy(recorded)[0] > by_hand + 0.05


def test_relative_entropy_reads_alike_for_any_number_of_options():
    for options in (2, 5, 64):
        nats, relative = decision_entropy([1 / options] * options)
        assert nats == pytest.approx(math.log(options), rel=1e-12)
        assert relative == pytest.approx(1.0, rel=1e-12)
    assert decision_entropy([0.0, 1.0, 0.0, 0.0]) == (0.0, 0.0)
    # Uniform over 2 and deterministic over 4: relative entropies 1 and 0, nats ln 2 and 0. A single
    # option offers no choice and is left out.
    stats = entropy_stats([([0.5, 0.5], 0.0), ([0.0, 0.0, 1.0, 0.0], 0.0), ([1.0], 0.0)])
    assert stats.decisions == 2
    assert stats.mean == pytest.approx(math.log(2) / 2, rel=1e-12)
    assert stats.relative_mean == pytest.approx(0.5, rel=1e-12)
    # The mean of relative entropies, not the ratio of means: a head with 64 options at ln 2 nats is
    # far more decided (1/6) than a two-option head at ln 2 (1).
    wide = [0.5, 0.5] + [0.0] * 62
    stats = entropy_stats([([0.5, 0.5], 0.0), (wide, 0.0)])
    assert stats.relative_mean == pytest.approx((1.0 + math.log(2) / math.log(64)) / 2, rel=1e-12)
    assert entropy_stats([]) == EntropyStats()


# -- shares and updates -----------------------------------------------------------------------------


def test_group_shares_separate_failed_zero_variance_from_converged_groups():
    groups = (
        GroupOutcome(solved=0, rollouts=8, zero_variance=True),  # collapse
        GroupOutcome(solved=8, rollouts=8, zero_variance=True),  # convergence
        GroupOutcome(solved=3, rollouts=8, zero_variance=False),
        GroupOutcome(solved=0, rollouts=8, zero_variance=False),  # failed, but rewards differ
    )
    result, events = observe(HealthState(), measured(1, groups=groups), LIMITS)
    assert result.groups == 4
    assert result.zero_variance_share == 0.5
    assert result.failed_zero_variance_share == 0.25
    assert events == []


def test_no_signal_fires_once_on_crossing_and_again_only_after_clearing():
    failed = GroupOutcome(solved=0, rollouts=4, zero_variance=True)
    learning = GroupOutcome(solved=2, rollouts=4, zero_variance=False)
    state = HealthState()
    history = []
    for iteration, groups in enumerate(
        [
            (failed, learning, learning),  # 1/3 < 0.5
            (failed, failed, learning),  # 2/3: crosses
            (failed, failed, failed),  # still above: no new event
            (failed, learning, learning),  # clears
            (failed, learning),  # exactly the threshold counts: crosses again
        ],
        start=1,
    ):
        _, events = observe(state, measured(iteration, groups=groups), LIMITS)
        history += [(event.iteration, event.kind) for event in events]
    assert history == [
        (2, EventKind.NO_SIGNAL),
        (4, EventKind.SIGNAL_RECOVERED),
        (5, EventKind.NO_SIGNAL),
    ]


def test_no_signal_message_has_the_numbers():
    failed = GroupOutcome(solved=0, rollouts=4, zero_variance=True)
    _, [event] = observe(HealthState(), measured(7, groups=(failed, failed, failed)), LIMITS)
    assert event.value == 1.0
    assert "iteration 7" in event.message and "3 of 3" in event.message and "100%" in event.message


def test_iterations_without_an_update_are_counted():
    state = HealthState()
    counts = [
        observe(state, measured(i, update_norm=norm), LIMITS)[0].iterations_without_update
        for i, norm in enumerate([0.0, 0.3, 0.0, 0.0, 1e-12], start=1)
    ]
    assert counts == [1, 1, 2, 3, 3]


# -- entropy collapse -------------------------------------------------------------------------------


def test_entropy_collapse_fires_while_failing_and_recovers_when_entropy_is_back():
    low = EntropyStats(decisions=10, mean=0.02, relative_mean=0.03)
    state = HealthState()
    history = []
    for iteration, (entropy, success) in enumerate(
        [
            (HEALTHY_ENTROPY, 0.2),
            (low, 0.2),  # collapse
            (low, 0.3),  # still collapsed: nothing new
            (EntropyStats(), 0.3),  # no decisions measured: says nothing either way
            (HEALTHY_ENTROPY, 0.3),  # recovered
            (low, 0.1),  # collapse again
        ],
        start=1,
    ):
        _, events = observe(state, measured(iteration, entropy=entropy, success_rate=success), LIMITS)
        history += [(event.iteration, event.kind) for event in events]
    assert history == [
        (2, EventKind.ENTROPY_COLLAPSE),
        (5, EventKind.ENTROPY_RECOVERED),
        (6, EventKind.ENTROPY_COLLAPSE),
    ]


def test_a_solved_task_may_be_deterministic():
    low = EntropyStats(decisions=10, mean=0.02, relative_mean=0.03)
    state = HealthState()
    _, events = observe(state, measured(1, entropy=low, success_rate=0.95), LIMITS)
    assert events == []
    _, [collapse] = observe(state, measured(2, entropy=low, success_rate=0.4), LIMITS)
    assert collapse.kind is EventKind.ENTROPY_COLLAPSE and collapse.value == 0.03
    assert "3.0%" in collapse.message and "40%" in collapse.message
    _, [cleared] = observe(state, measured(3, entropy=low, success_rate=0.92), LIMITS)
    assert cleared.kind is EventKind.ENTROPY_RECOVERED
    assert "92%" in cleared.message


# -- stuck strata -----------------------------------------------------------------------------------


def test_stuck_counts_only_the_iterations_that_drew_the_stratum():
    state = HealthState()
    draws = [
        {"hard": (0, 8), "easy": (3, 8)},
        {"hard": (0, 8)},
        {"easy": (4, 8)},  # not drawn: neither counts nor resets
        {"easy": (5, 8)},
        {"hard": (0, 4), "easy": (2, 4)},  # third drawn iteration without success: stuck
        {"hard": (0, 8)},  # still stuck: no second event
        {"hard": (2, 8)},  # solved again
        {"hard": (0, 8)},
        {"hard": (0, 8)},
    ]
    history = []
    for iteration, strata in enumerate(draws, start=1):
        result, events = observe(state, measured(iteration, strata=strata), LIMITS)
        history += [(event.iteration, event.kind, event.stratum, event.value) for event in events]
        if iteration == 5:
            hard = result.strata["hard"]
            assert (hard.zero_success_iterations, hard.stuck, hard.last_iteration) == (3, True, 5)
            assert (hard.rollouts, hard.success_rate) == (4, 0.0)
            assert result.strata["easy"].zero_success_iterations == 0
    assert history == [
        (5, EventKind.STRATUM_STUCK, "hard", 3.0),
        (7, EventKind.STRATUM_RECOVERED, "hard", 0.25),
    ]
    assert state.strata["hard"].zero_success_iterations == 2 and not state.strata["hard"].stuck
    assert state.strata["easy"].last_iteration == 5


def test_stratum_events_name_the_stratum_and_the_numbers():
    state = HealthState()
    events = []
    for iteration in range(1, 4):
        events += observe(state, measured(iteration, strata={"lookup_count": (0, 8)}), LIMITS)[1]
    [stuck] = events
    assert "'lookup_count'" in stuck.message and "3 iterations" in stuck.message
    assert "iteration 3" in stuck.message
    [recovered] = observe(state, measured(4, strata={"lookup_count": (2, 8)}), LIMITS)[1]
    assert "'lookup_count'" in recovered.message and "2 of 8" in recovered.message


# -- state, thresholds and protos ------------------------------------------------------------------


def test_state_survives_json_and_a_state_from_before_has_the_defaults():
    state = HealthState()
    observe(state, measured(1, strata={"a": (0, 4)}, update_norm=0.0), LIMITS)
    observe(
        state,
        measured(2, groups=(GroupOutcome(0, 4, True),), entropy=EntropyStats(3, 0.01, 0.01)),
        LIMITS,
    )
    restored = HealthState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    assert restored.no_signal and restored.entropy_collapsed
    assert HealthState.from_dict(None) == HealthState()
    assert HealthState.from_dict({"strata": {"a": {"rollouts": 4}}}).strata["a"].rollouts == 4


def test_thresholds_take_defaults_for_zero_and_name_a_bad_field():
    assert health.thresholds() == Thresholds(0.05, 0.9, 0.75, 10)
    assert health.thresholds(0.2, 0.5, 0.6, 4) == Thresholds(0.2, 0.5, 0.6, 4)
    for bad in (
        {"min_relative_entropy": -0.1},
        {"min_relative_entropy": math.nan},
        {"entropy_success_ceiling": 1.5},
        {"max_failed_zero_variance_share": 2.0},
        {"stuck_iterations": -1},
    ):
        with pytest.raises(InvalidArgument) as failure:
            health.thresholds(**bad, field="x")
        assert failure.value.field == f"x.{next(iter(bad))}"


def job_with(detection: jobs_pb2.CollapseDetection | None = None) -> jobs_pb2.Job:
    spec = jobs_pb2.JobSpec(
        runtime=collector_pb2.RuntimeSpec(toolbench=collector_pb2.ToolbenchRuntime()),
        dataset=jobs_pb2.DatasetSpec(toolbench=jobs_pb2.ToolbenchQueries()),
        policy=jobs_pb2.PolicySource(new_policy=jobs_pb2.NewPolicy()),
        iterations=3,
    )
    if detection is not None:
        spec.collapse_detection.CopyFrom(detection)
    return jobs_pb2.Job(spec=spec)


@pytest.mark.parametrize(
    "name, value",
    [
        ("min_relative_entropy", 1.2),
        ("entropy_success_ceiling", -0.5),
        ("max_failed_zero_variance_share", math.inf),
        ("stuck_iterations", -2),
    ],
)
def test_job_spec_collapse_detection_errors_name_the_field(name, value):
    with pytest.raises(InvalidArgument) as failure:
        validate_new_job(job_with(jobs_pb2.CollapseDetection(**{name: value})), Settings())
    assert failure.value.field == f"job.spec.collapse_detection.{name}"


def test_job_spec_collapse_detection_defaults_are_filled_in_and_values_kept():
    spec = validate_new_job(job_with(), Settings()).spec
    assert spec.collapse_detection == jobs_pb2.CollapseDetection(
        min_relative_entropy=0.05,
        entropy_success_ceiling=0.9,
        max_failed_zero_variance_share=0.75,
        stuck_iterations=10,
    )
    spec = validate_new_job(job_with(jobs_pb2.CollapseDetection(stuck_iterations=2)), Settings()).spec
    assert spec.collapse_detection.stuck_iterations == 2
    assert health.thresholds_from_proto(spec.collapse_detection).stuck_iterations == 2


def trajectory(group: str, index: int, solved: bool, *decisions: trajectory_pb2.Decision):
    return trajectory_pb2.Trajectory(
        trajectory_id=f"{group}-{index}", group_id=group, success=solved, decisions=decisions
    )


def test_group_outcomes_compare_the_scored_rewards():
    groups = [
        [trajectory("a", 0, False), trajectory("a", 1, False)],
        [trajectory("b", 0, True), trajectory("b", 1, False)],
        [trajectory("c", 0, False), trajectory("c", 1, False), trajectory("c", 2, False)],
        [],  # nothing collected: no outcome
    ]
    score = reward_pb2.TrajectoryScore
    scored = reward_pb2.ScoreGroupsResponse(
        groups=[
            reward_pb2.GroupScore(group_id="a", trajectories=[score(reward=0.0), score(reward=0.0)]),
            reward_pb2.GroupScore(group_id="b", trajectories=[score(reward=1.0), score(reward=0.0)]),
            # The failure policy dropped one: the two left differ.
            reward_pb2.GroupScore(
                group_id="c",
                trajectories=[score(dropped=True), score(reward=0.0), score(reward=0.25)],
            ),
        ]
    )
    assert health.group_outcomes(groups, scored) == [
        GroupOutcome(solved=0, rollouts=2, zero_variance=True),
        GroupOutcome(solved=1, rollouts=2, zero_variance=False),
        GroupOutcome(solved=0, rollouts=3, zero_variance=False),
    ]


def test_decisions_are_read_with_their_exploration():
    decision = trajectory_pb2.Decision(probabilities=[0.25, 0.75], exploration=0.2)
    stats = entropy_stats(health.decisions_of([trajectory("a", 0, False, decision, decision)]))
    pi = [(0.25 - 0.1) / 0.8, (0.75 - 0.1) / 0.8]
    by_hand = -sum(p * math.log(p) for p in pi)
    assert stats.decisions == 2 and stats.mean == pytest.approx(by_hand, rel=1e-9)


def test_protos_carry_every_measurement_and_kind():
    state = HealthState()
    result, _ = observe(
        state,
        measured(4, groups=(GroupOutcome(0, 4, True), GroupOutcome(1, 4, False)), strata={"s": (1, 8)}),
        LIMITS,
    )
    message = health.health_proto(result)
    assert (message.groups, message.zero_variance_share, message.failed_zero_variance_share) == (2, 0.5, 0.5)
    assert (message.decisions, message.entropy_mean, message.relative_entropy_mean) == (10, 1.0, 0.8)
    [stratum] = message.strata
    assert (stratum.name, stratum.success_rate, stratum.rollouts) == ("s", 0.125, 8)
    assert (stratum.last_iteration, stratum.zero_success_iterations, stratum.stuck) == (4, 0, False)
    kinds_seen = {health.event_proto(health.HealthEvent(kind, 1, "m", 0.0)).kind for kind in EventKind}
    assert len(kinds_seen) == len(EventKind) and jobs_pb2.JOB_EVENT_KIND_UNSPECIFIED not in kinds_seen
    event = health.event_proto(health.HealthEvent(EventKind.STRATUM_STUCK, 3, "stuck", 3.0, "s"))
    assert (event.iteration, event.stratum, event.message, event.value) == (3, "s", "stuck", 3.0)
    assert event.create_time.seconds > 0
