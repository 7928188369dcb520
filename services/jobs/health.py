"""Learning health: whether a training job's iterations still carry a learning signal.

A group whose rollouts all fail alike has zero reward variance, is dropped, and gives its query no
gradient; when every group of an iteration is dropped the policy does not change at all. Nothing in
the loss shows it, so each iteration is measured here:

- the share of groups with zero reward variance, and of those that also failed every rollout (all
  solved carries no signal either, but that is convergence, not collapse);
- the mean entropy of the policy at the iteration's training decisions, in nats and relative to the
  uniform entropy ln(options), so heads of any size read alike;
- whether the update moved the weights (`update_norm`), counted over the run;
- per stratum of the training queries: its latest success rate and the consecutive iterations that
  drew it without a solved rollout.

Crossing a threshold makes a `HealthEvent`, once, and the matching recovery once the condition has
cleared. `HealthState` is everything carried from one iteration to the next; the job's checkpoint
holds it, so a resumed job reports exactly what an uninterrupted one would.

The math is plain Python; the functions at the end (after "Edges") read and write the protobuf
messages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum

from cohort.api.jobs.v1 import jobs_pb2
from cohort.api.reward.v1 import reward_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.services.jobs import evaluation

DEFAULT_MIN_RELATIVE_ENTROPY = 0.05
DEFAULT_ENTROPY_SUCCESS_CEILING = 0.9
DEFAULT_MAX_FAILED_ZERO_VARIANCE_SHARE = 0.75
DEFAULT_STUCK_ITERATIONS = 10
MAX_STUCK_ITERATIONS = 100_000
"""As many as a job may have iterations."""
MAX_EVENTS = 100
"""Events a job's progress keeps (the most recent)."""


@dataclass(frozen=True)
class Thresholds:
    """When events fire (`JobSpec.collapse_detection`)."""

    min_relative_entropy: float = DEFAULT_MIN_RELATIVE_ENTROPY
    entropy_success_ceiling: float = DEFAULT_ENTROPY_SUCCESS_CEILING
    """Low entropy is reported only while the iteration's training success is below this: a policy
    that solves the task may be deterministic."""
    max_failed_zero_variance_share: float = DEFAULT_MAX_FAILED_ZERO_VARIANCE_SHARE
    stuck_iterations: int = DEFAULT_STUCK_ITERATIONS


def thresholds(
    min_relative_entropy: float = 0.0,
    entropy_success_ceiling: float = 0.0,
    max_failed_zero_variance_share: float = 0.0,
    stuck_iterations: int = 0,
    *,
    field: str = "collapse_detection",
) -> Thresholds:
    """Checked thresholds, zero values replaced by the defaults; `InvalidArgument` naming
    `<field>.<name>` for a value out of range."""
    values = {}
    for name, value, default in (
        ("min_relative_entropy", min_relative_entropy, DEFAULT_MIN_RELATIVE_ENTROPY),
        ("entropy_success_ceiling", entropy_success_ceiling, DEFAULT_ENTROPY_SUCCESS_CEILING),
        (
            "max_failed_zero_variance_share",
            max_failed_zero_variance_share,
            DEFAULT_MAX_FAILED_ZERO_VARIANCE_SHARE,
        ),
    ):
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise InvalidArgument(f"{field}.{name}", f"must be in [0, 1] (0 means {default}), got {value}")
        values[name] = value or default
    if not 0 <= stuck_iterations <= MAX_STUCK_ITERATIONS:
        raise InvalidArgument(
            f"{field}.stuck_iterations",
            f"must be between 0 and {MAX_STUCK_ITERATIONS} (0 means {DEFAULT_STUCK_ITERATIONS}), "
            f"got {stuck_iterations}",
        )
    return Thresholds(**values, stuck_iterations=stuck_iterations or DEFAULT_STUCK_ITERATIONS)


# -- entropy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntropyStats:
    """The mean entropy over decisions that offered at least two options (0 when there were none)."""

    decisions: int = 0
    mean: float = 0.0
    """In nats."""
    relative_mean: float = 0.0
    """Mean of entropy / ln(options): 1 uniform, 0 deterministic."""


def policy_probabilities(recorded: Sequence[float], exploration: float = 0.0) -> list[float]:
    """The policy's own distribution behind a recorded one: a decision sampled with exploration ε
    records `q = (1 - ε) * pi + ε / n`, so `pi = (q - ε / n) / (1 - ε)` (rounding below 0 is 0)."""
    if not exploration:
        return list(recorded)
    floor = exploration / len(recorded)
    return [max(0.0, (q - floor) / (1.0 - exploration)) for q in recorded]


def decision_entropy(probabilities: Sequence[float], exploration: float = 0.0) -> tuple[float, float] | None:
    """(entropy in nats, entropy / ln(options)) of the policy at one decision, from the recorded
    distribution and its exploration ε; None for a decision with fewer than two options (no choice)."""
    options = len(probabilities)
    if options < 2:
        return None
    pi = policy_probabilities(probabilities, exploration)
    total = sum(pi)
    if not total > 0:
        return None
    # Recorded probabilities are rounded (and ε-corrected ones more so): renormalized, they sum to 1.
    entropy = -sum(p / total * math.log(p / total) for p in pi if p > 0)
    entropy = max(0.0, entropy)
    return entropy, entropy / math.log(options)


def entropy_stats(decisions: Iterable[tuple[Sequence[float], float]]) -> EntropyStats:
    """The mean entropy of `(recorded probabilities, exploration)` decisions."""
    count = 0
    total = relative_total = 0.0
    for probabilities, exploration in decisions:
        measured = decision_entropy(probabilities, exploration)
        if measured is None:
            continue
        count += 1
        total += measured[0]
        relative_total += measured[1]
    if not count:
        return EntropyStats()
    return EntropyStats(decisions=count, mean=total / count, relative_mean=relative_total / count)


# -- one iteration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupOutcome:
    """One group of an iteration: rollouts solved of rollouts, and whether its rewards were all equal."""

    solved: int
    rollouts: int
    zero_variance: bool

    @property
    def failed_alike(self) -> bool:
        """Zero variance with nothing solved: the query gets no gradient and cannot improve."""
        return self.zero_variance and self.solved == 0


def rewards_have_zero_variance(rewards: Sequence[float]) -> bool:
    """Whether a group's rewards carry no signal: all equal, or fewer than two to compare (the reward
    service drops such a group)."""
    return len(rewards) < 2 or max(rewards) == min(rewards)


@dataclass(frozen=True)
class Observation:
    """What one training iteration measured."""

    iteration: int
    """Iterations completed with this one (as `JobProgress.iteration`)."""
    groups: Sequence[GroupOutcome]
    strata: Mapping[str, tuple[int, int]]
    """Per stratum of the iteration's queries: (rollouts solved, rollouts)."""
    entropy: EntropyStats
    success_rate: float
    """The iteration's training success rate."""
    update_norm: float
    """How far the update moved the weights; 0: the policy did not change."""


class EventKind(Enum):
    ENTROPY_COLLAPSE = "entropy_collapse"
    ENTROPY_RECOVERED = "entropy_recovered"
    NO_SIGNAL = "no_signal"
    SIGNAL_RECOVERED = "signal_recovered"
    STRATUM_STUCK = "stratum_stuck"
    STRATUM_RECOVERED = "stratum_recovered"

    @property
    def is_recovery(self) -> bool:
        return self in (EventKind.ENTROPY_RECOVERED, EventKind.SIGNAL_RECOVERED, EventKind.STRATUM_RECOVERED)


@dataclass(frozen=True)
class HealthEvent:
    kind: EventKind
    iteration: int
    message: str
    value: float
    stratum: str = ""


@dataclass
class StratumState:
    """A stratum as of the latest iteration that drew it."""

    success_rate: float = 0.0
    rollouts: int = 0
    last_iteration: int = 0
    zero_success_iterations: int = 0
    """Consecutive iterations that drew the stratum without a solved rollout."""
    stuck: bool = False
    """A stuck event was fired and no recovery yet."""


@dataclass
class HealthState:
    """What one iteration's health carries to the next (checkpointed with the job's state)."""

    iterations_without_update: int = 0
    entropy_collapsed: bool = False
    no_signal: bool = False
    strata: dict[str, StratumState] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: Mapping | None) -> HealthState:
        """The state `to_dict` wrote; missing keys (a checkpoint from before a key existed) are the
        defaults."""
        saved = saved or {}
        known = {f for f in StratumState.__dataclass_fields__}
        return cls(
            iterations_without_update=int(saved.get("iterations_without_update", 0)),
            entropy_collapsed=bool(saved.get("entropy_collapsed", False)),
            no_signal=bool(saved.get("no_signal", False)),
            strata={
                name: StratumState(**{k: v for k, v in values.items() if k in known})
                for name, values in saved.get("strata", {}).items()
            },
        )


@dataclass(frozen=True)
class LearningHealth:
    """One iteration's health, as published in the job's progress."""

    groups: int
    zero_variance_share: float
    failed_zero_variance_share: float
    entropy: EntropyStats
    iterations_without_update: int
    strata: dict[str, StratumState]
    """A copy, by name in sorted order."""


def observe(
    state: HealthState, measured: Observation, limits: Thresholds
) -> tuple[LearningHealth, list[HealthEvent]]:
    """Moves `state` past one iteration; the iteration's health and the events it crossed into."""
    events: list[HealthEvent] = []
    iteration = measured.iteration

    if measured.update_norm == 0:
        state.iterations_without_update += 1

    groups = len(measured.groups)
    zero_variance = sum(g.zero_variance for g in measured.groups)
    failed_alike = sum(g.failed_alike for g in measured.groups)
    zero_share = zero_variance / groups if groups else 0.0
    failed_share = failed_alike / groups if groups else 0.0
    no_signal = groups > 0 and failed_share >= limits.max_failed_zero_variance_share
    if no_signal != state.no_signal:
        state.no_signal = no_signal
        events.append(_signal_event(no_signal, iteration, failed_alike, groups, failed_share, limits))

    entropy = measured.entropy
    if entropy.decisions:  # an iteration without decisions says nothing about entropy
        collapsed = (
            entropy.relative_mean < limits.min_relative_entropy
            and measured.success_rate < limits.entropy_success_ceiling
        )
        if collapsed != state.entropy_collapsed:
            state.entropy_collapsed = collapsed
            events.append(_entropy_event(collapsed, iteration, entropy, measured.success_rate, limits))

    for name in sorted(measured.strata):
        solved, rollouts = measured.strata[name]
        stratum = state.strata.setdefault(name, StratumState())
        stratum.success_rate = solved / rollouts if rollouts else 0.0
        stratum.rollouts = rollouts
        stratum.last_iteration = iteration
        if solved:
            if stratum.stuck:
                events.append(
                    HealthEvent(
                        EventKind.STRATUM_RECOVERED,
                        iteration,
                        f"Stratum {_label(name)} recovered at iteration {iteration}: {solved} of "
                        f"{rollouts} rollouts solved ({stratum.success_rate:.0%}) after "
                        f"{stratum.zero_success_iterations} iterations that drew it without one.",
                        stratum.success_rate,
                        name,
                    )
                )
            stratum.zero_success_iterations = 0
            stratum.stuck = False
        else:
            stratum.zero_success_iterations += 1
            if not stratum.stuck and stratum.zero_success_iterations >= limits.stuck_iterations:
                stratum.stuck = True
                events.append(
                    HealthEvent(
                        EventKind.STRATUM_STUCK,
                        iteration,
                        f"Stratum {_label(name)} is stuck at 0% success: none of its rollouts was solved "
                        f"in the {stratum.zero_success_iterations} iterations that drew it up to "
                        f"iteration {iteration} (0 of {rollouts} in the latest).",
                        float(stratum.zero_success_iterations),
                        name,
                    )
                )

    health = LearningHealth(
        groups=groups,
        zero_variance_share=zero_share,
        failed_zero_variance_share=failed_share,
        entropy=entropy,
        iterations_without_update=state.iterations_without_update,
        strata={name: StratumState(**asdict(state.strata[name])) for name in sorted(state.strata)},
    )
    return health, events


def _signal_event(
    no_signal: bool, iteration: int, failed: int, groups: int, share: float, limits: Thresholds
) -> HealthEvent:
    threshold = limits.max_failed_zero_variance_share
    if no_signal:
        message = (
            f"Most groups carry no learning signal at iteration {iteration}: {failed} of {groups} "
            f"({share:.0%}) failed every rollout with equal rewards (zero variance, no gradient), at or "
            f"above the {threshold:.0%} threshold."
        )
        return HealthEvent(EventKind.NO_SIGNAL, iteration, message, share)
    message = (
        f"Learning signal is back at iteration {iteration}: {failed} of {groups} groups ({share:.0%}) "
        f"failed with zero reward variance, below the {threshold:.0%} threshold."
    )
    return HealthEvent(EventKind.SIGNAL_RECOVERED, iteration, message, share)


def _entropy_event(
    collapsed: bool, iteration: int, entropy: EntropyStats, success: float, limits: Thresholds
) -> HealthEvent:
    relative = entropy.relative_mean
    floor, ceiling = limits.min_relative_entropy, limits.entropy_success_ceiling
    if collapsed:
        message = (
            f"Entropy collapse at iteration {iteration}: the policy's decisions keep {relative:.1%} of "
            f"the uniform entropy ({entropy.mean:.3f} nats), below the {floor:.1%} floor, while training "
            f"success is {success:.0%} (below {ceiling:.0%}): it stopped exploring before solving the task."
        )
        return HealthEvent(EventKind.ENTROPY_COLLAPSE, iteration, message, relative)
    if relative >= floor:
        message = (
            f"Entropy recovered at iteration {iteration}: the policy's decisions keep {relative:.1%} of "
            f"the uniform entropy ({entropy.mean:.3f} nats), at or above the {floor:.1%} floor."
        )
    else:
        message = (
            f"Entropy collapse cleared at iteration {iteration}: training success reached {success:.0%} "
            f"(at least {ceiling:.0%}), where a near-deterministic policy ({relative:.1%} of the uniform "
            "entropy) is expected."
        )
    return HealthEvent(EventKind.ENTROPY_RECOVERED, iteration, message, relative)


def _label(stratum: str) -> str:
    return repr(stratum) if stratum else "(queries without a stratum)"


# -- Edges: protobuf in and out ------------------------------------------------------------------


def thresholds_from_proto(
    detection: jobs_pb2.CollapseDetection, field: str = "job.spec.collapse_detection"
) -> Thresholds:
    return thresholds(
        detection.min_relative_entropy,
        detection.entropy_success_ceiling,
        detection.max_failed_zero_variance_share,
        detection.stuck_iterations,
        field=field,
    )


def normalize_collapse_detection(detection: jobs_pb2.CollapseDetection, field: str) -> None:
    """Checks `detection` (errors name `<field>.<name>`) and writes the defaults into its zero fields."""
    checked = thresholds_from_proto(detection, field)
    detection.min_relative_entropy = checked.min_relative_entropy
    detection.entropy_success_ceiling = checked.entropy_success_ceiling
    detection.max_failed_zero_variance_share = checked.max_failed_zero_variance_share
    detection.stuck_iterations = checked.stuck_iterations


def group_outcomes(
    groups: Sequence[Sequence[trajectory_pb2.Trajectory]],
    scored: reward_pb2.ScoreGroupsResponse,
    solved_per_group: Sequence[int] | None = None,
) -> list[GroupOutcome]:
    """Each scored group's outcome (`solved_per_group`: its rollouts solved, as the caller counted
    them, else counted here); a trajectory the failure policy dropped or that failed scoring has no
    reward to compare."""
    if solved_per_group is None:
        solved_per_group = [sum(map(evaluation.solved, group)) for group in groups]
    rewards = {
        group.group_id: [t.reward for t in group.trajectories if not t.dropped and not t.HasField("error")]
        for group in scored.groups
    }
    return [
        GroupOutcome(
            solved=solved,
            rollouts=len(group),
            zero_variance=rewards_have_zero_variance(rewards[group[0].group_id]),
        )
        for group, solved in zip(groups, solved_per_group, strict=True)
        if group and group[0].group_id in rewards
    ]


def decisions_of(
    trajectories: Iterable[trajectory_pb2.Trajectory],
) -> Iterator[tuple[Sequence[float], float]]:
    """(recorded probabilities, exploration ε) of every decision of `trajectories`."""
    for trajectory in trajectories:
        for decision in trajectory.decisions:
            yield decision.probabilities, decision.exploration


def health_proto(health: LearningHealth) -> jobs_pb2.LearningHealth:
    return jobs_pb2.LearningHealth(
        groups=health.groups,
        zero_variance_share=health.zero_variance_share,
        failed_zero_variance_share=health.failed_zero_variance_share,
        decisions=health.entropy.decisions,
        entropy_mean=health.entropy.mean,
        relative_entropy_mean=health.entropy.relative_mean,
        iterations_without_update=health.iterations_without_update,
        strata=[
            jobs_pb2.StratumHealth(
                name=name,
                success_rate=stratum.success_rate,
                rollouts=stratum.rollouts,
                last_iteration=stratum.last_iteration,
                zero_success_iterations=stratum.zero_success_iterations,
                stuck=stratum.stuck,
            )
            for name, stratum in health.strata.items()
        ],
    )


_EVENT_KINDS = {
    EventKind.ENTROPY_COLLAPSE: jobs_pb2.JOB_EVENT_KIND_ENTROPY_COLLAPSE,
    EventKind.ENTROPY_RECOVERED: jobs_pb2.JOB_EVENT_KIND_ENTROPY_RECOVERED,
    EventKind.NO_SIGNAL: jobs_pb2.JOB_EVENT_KIND_NO_SIGNAL,
    EventKind.SIGNAL_RECOVERED: jobs_pb2.JOB_EVENT_KIND_SIGNAL_RECOVERED,
    EventKind.STRATUM_STUCK: jobs_pb2.JOB_EVENT_KIND_STRATUM_STUCK,
    EventKind.STRATUM_RECOVERED: jobs_pb2.JOB_EVENT_KIND_STRATUM_RECOVERED,
}


def event_proto(event: HealthEvent) -> jobs_pb2.JobEvent:
    message = jobs_pb2.JobEvent(
        kind=_EVENT_KINDS[event.kind],
        iteration=event.iteration,
        stratum=event.stratum,
        message=event.message,
        value=event.value,
    )
    message.create_time.GetCurrentTime()
    return message
