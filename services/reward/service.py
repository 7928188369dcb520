"""Scoring groups of trajectories: rewards, group statistics, advantages per trajectory and decision.

`RewardScorer.score_groups` validates the whole request first (nothing is called before the request
is known to be good), fetches trajectories given by id, applies the failure policy, calls custom
functions (concurrently; a failing one fails only its trajectory), then computes the built-in terms,
the group statistics and the advantages in one pass over flat arrays.

Semantics, where the contract leaves them open:
- Weights: a request with no reward spec, or one whose weights are all zero and names no function,
  gets the default reward, the outcome with weight 1. Otherwise a zero weight turns its term off.
- Failed rollouts (termination reason in `terms.FAILED_TERMINATIONS`): under SCORE_AS_FAILURE the
  outcome term is 0 whatever was reported and custom functions are not called (their terms are 0);
  the behaviour terms (tool usage, verification, length) still apply. DROP leaves the trajectory out
  of its group; RETRY leaves it out too and lists it in `retry_trajectory_ids`.
- A group is dropped when fewer than 2 trajectories remain, or when the values being normalized are
  all equal (no signal); a dropped group's advantages are all 0.
- Credit assignment BROADCAST (Flow-GRPO): every decision gets the trajectory advantage.
  DISCOUNTED_RETURNS: each step's own `step_reward` (0 when unset), the trajectory reward added at
  the last step, discounted returns `G_t` with `gamma`; the group is normalized by the mean/std of
  the returns from the start `G_0`, and a decision at step t gets `(G_t - mean) / (std + eps)`
  (Dr. GRPO: `G_t - mean`). The trajectory advantage is its normalized `G_0`. With gamma 1 and no
  step rewards this is exactly BROADCAST. A decision's step is found by its `step_number`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.learning.advantages import (
    ADVANTAGE_ESTIMATORS,
    DEFAULT_EPSILON,
    DEFAULT_GAMMA,
    discounted_decision_returns,
    flow_grpo_broadcast,
    group_statistics,
)
from cohort.platform.errors import CohortError, InvalidArgument
from cohort.services.reward.functions import BUILTINS, FunctionResult, RewardFunctionRegistry, parse_params
from cohort.services.reward.store import FunctionKind, RewardFunction
from cohort.services.reward.terms import TrajectoryFacts, failed_rollout_outcome, is_failed_rollout

OFF_LOOP_TRAJECTORIES = 2_000
"""Above this many trajectories in a request, the CPU work runs on a worker thread (it would stall
the event loop for tens of milliseconds); below, the thread hand-off costs more than it saves."""

MAX_TRAJECTORIES = 100_000

SPEC_TERMS = ("outcome", "tool_usage", "verification", "length_penalty")


class Normalization(Enum):
    """How a group's values become advantages; each value names its estimator in
    `cohort.learning.advantages.ADVANTAGE_ESTIMATORS`."""

    MEAN_STD = "grpo"
    MEAN_ONLY = "dr_grpo"


class CreditAssignment(Enum):
    BROADCAST = "broadcast"
    DISCOUNTED_RETURNS = "discounted_returns"


class FailurePolicy(Enum):
    SCORE_AS_FAILURE = "score_as_failure"
    DROP = "drop"
    RETRY = "retry"


@dataclass(frozen=True)
class WeightedFunction:
    name: str
    weight: float
    params_json: str = ""


@dataclass(frozen=True)
class RewardSpec:
    outcome_weight: float = 1.0
    tool_usage_weight: float = 0.0
    verification_weight: float = 0.0
    length_penalty_weight: float = 0.0
    step_budget: int = 0
    token_budget: int = 0
    custom_functions: tuple[WeightedFunction, ...] = ()

    def is_empty(self) -> bool:
        weights = (self.outcome_weight, self.tool_usage_weight, self.verification_weight)
        return not any(weights) and not self.length_penalty_weight and not self.custom_functions


DEFAULT_REWARD = RewardSpec()


@dataclass(frozen=True)
class AdvantageSpec:
    normalization: Normalization = Normalization.MEAN_STD
    credit_assignment: CreditAssignment = CreditAssignment.BROADCAST
    gamma: float = DEFAULT_GAMMA
    epsilon: float = DEFAULT_EPSILON


@dataclass
class GroupInput:
    group_id: str
    trajectories: Sequence[tpb.Trajectory] = ()
    trajectory_ids: Sequence[str] = ()


@dataclass(slots=True)
class Component:
    name: str
    value: float
    weight: float
    detail: str = ""


@dataclass(slots=True)
class TrajectoryResult:
    trajectory_id: str
    reward: float = 0.0
    components: list[Component] = field(default_factory=list)
    advantage: float = 0.0
    decision_advantages: list[float] = field(default_factory=list)
    dropped: bool = False
    error: CohortError | None = None


@dataclass(slots=True)
class GroupResult:
    group_id: str
    reward_mean: float = 0.0
    reward_std: float = 0.0
    size: int = 0
    dropped: bool = False
    drop_reason: str = ""
    trajectories: list[TrajectoryResult] = field(default_factory=list)
    retry_trajectory_ids: list[str] = field(default_factory=list)


@dataclass
class ScoreResult:
    groups: list[GroupResult]
    dropped_group_count: int


Fetch = Callable[[Sequence[str]], Awaitable[list[tpb.Trajectory]]]
"""Stored trajectories by id, in order; raises `NotFound` naming a missing one."""


@dataclass(frozen=True)
class _Term:
    """One weighted term of the request, resolved: a built-in computed in the array pass, or a custom
    function called beforehand."""

    name: str
    weight: float
    function: RewardFunction
    params: dict[str, Any]
    params_json: str = ""


def _check_weight(value: float, name: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(name, "must be a finite number >= 0")


def resolve_terms(registry: RewardFunctionRegistry, tenant_id: str, spec: RewardSpec) -> list[_Term]:
    """The request's weighted terms with zero-weight ones left out; `InvalidArgument`/`NotFound` when bad."""
    for name in ("outcome_weight", "tool_usage_weight", "verification_weight", "length_penalty_weight"):
        _check_weight(getattr(spec, name), f"reward.{name}")
    if spec.step_budget < 0:
        raise InvalidArgument("reward.step_budget", "must be >= 0")
    if spec.token_budget < 0:
        raise InvalidArgument("reward.token_budget", "must be >= 0")
    if spec.length_penalty_weight and not (spec.step_budget or spec.token_budget):
        raise InvalidArgument(
            "reward.length_penalty_weight", "is set but neither reward.step_budget nor reward.token_budget is"
        )
    if spec.is_empty():
        spec = DEFAULT_REWARD
    terms = []
    for name, weight, params in (
        ("outcome", spec.outcome_weight, {}),
        ("tool_usage", spec.tool_usage_weight, {}),
        ("verification", spec.verification_weight, {}),
        (
            "length_penalty",
            spec.length_penalty_weight,
            {"step_budget": spec.step_budget, "token_budget": spec.token_budget},
        ),
    ):
        if weight:
            terms.append(_Term(name, weight, BUILTINS[name].function, params))
    seen = {term.name for term in terms}
    for index, custom in enumerate(spec.custom_functions):
        prefix = f"reward.custom_functions[{index}]"
        if not custom.name:
            raise InvalidArgument(f"{prefix}.name", "is required")
        _check_weight(custom.weight, f"{prefix}.weight")
        if custom.name in seen:
            raise InvalidArgument(
                f"{prefix}.name", f"{custom.name!r} is weighted twice (in the spec or in custom_functions)"
            )
        seen.add(custom.name)
        function = registry.get(tenant_id, custom.name)
        params = parse_params(custom.name, custom.params_json, f"{prefix}.params_json")
        if function.kind is FunctionKind.BUILTIN and custom.name == "length_penalty":
            if not (params.get("step_budget") or params.get("token_budget")):
                message = "length_penalty needs step_budget or token_budget"
                raise InvalidArgument(f"{prefix}.params_json", message)
        if custom.weight:
            terms.append(_Term(custom.name, custom.weight, function, params, custom.params_json))
    return terms


def check_advantage(spec: AdvantageSpec) -> None:
    if not (math.isfinite(spec.gamma) and 0.0 <= spec.gamma <= 1.0):
        raise InvalidArgument("advantage.gamma", "must be between 0 and 1")
    if not math.isfinite(spec.epsilon) or spec.epsilon < 0:
        raise InvalidArgument("advantage.epsilon", "must be a finite number >= 0")


def _check_trajectory(facts: TrajectoryFacts, where: str, *, step_rewards: bool) -> None:
    """What scoring reads must be well-formed; step rewards are read (and checked) only when the
    credit assignment uses them."""
    outcome = facts.trajectory.outcome
    if outcome.HasField("score") and not (math.isfinite(outcome.score) and 0.0 <= outcome.score <= 1.0):
        raise InvalidArgument(f"{where}.outcome.score", "must be between 0 and 1")
    if step_rewards and not math.isfinite(math.fsum(facts.step_rewards)):
        for index, reward in enumerate(facts.step_rewards):
            if not math.isfinite(reward):
                raise InvalidArgument(f"{where}.agent_steps[{index}].step_reward", "must be a finite number")


def check_groups(groups: Sequence[GroupInput]) -> int:
    """Every group non-empty, group and trajectory ids unique; the number of trajectories."""
    if not groups:
        raise InvalidArgument("groups", "at least one group is required")
    group_ids: set[str] = set()
    trajectory_ids: set[str] = set()
    total = 0
    for g, group in enumerate(groups):
        if not group.trajectories and not group.trajectory_ids:
            raise InvalidArgument(f"groups[{g}]", "has no trajectories and no trajectory_ids")
        if group.group_id:
            if group.group_id in group_ids:
                raise InvalidArgument(f"groups[{g}].group_id", f"{group.group_id!r} appears twice")
            group_ids.add(group.group_id)
        for i, t in enumerate(group.trajectories):
            trajectory_id = t.trajectory_id
            if not trajectory_id or trajectory_id in trajectory_ids:
                problem = "is required" if not trajectory_id else f"{trajectory_id!r} appears twice"
                raise InvalidArgument(f"groups[{g}].trajectories[{i}].trajectory_id", problem)
            trajectory_ids.add(trajectory_id)
        for i, trajectory_id in enumerate(group.trajectory_ids):
            where = f"groups[{g}].trajectory_ids[{i}]"
            if not trajectory_id:
                raise InvalidArgument(where, "must not be empty")
            if trajectory_id in trajectory_ids:
                raise InvalidArgument(where, f"{trajectory_id!r} appears twice")
            trajectory_ids.add(trajectory_id)
        total += len(group.trajectories) + len(group.trajectory_ids)
    if total > MAX_TRAJECTORIES:
        raise InvalidArgument("groups", f"more than {MAX_TRAJECTORIES} trajectories in one request")
    return total


def gather_facts(
    groups: Sequence[GroupInput], fetched: dict[str, tpb.Trajectory], step_rewards: bool
) -> tuple[list[TrajectoryFacts], list[int]]:
    """The facts of every trajectory, flat in request order (given, then fetched, per group), each
    checked; and the group of each."""
    flat: list[TrajectoryFacts] = []
    group_index: list[int] = []
    for g, group in enumerate(groups):
        for i, t in enumerate(group.trajectories):
            facts = TrajectoryFacts(t)
            _check_trajectory(facts, f"groups[{g}].trajectories[{i}]", step_rewards=step_rewards)
            flat.append(facts)
        for i, trajectory_id in enumerate(group.trajectory_ids):
            facts = TrajectoryFacts(fetched[trajectory_id])
            _check_trajectory(facts, f"groups[{g}].trajectory_ids[{i}]", step_rewards=step_rewards)
            flat.append(facts)
        group_index.extend([g] * (len(group.trajectories) + len(group.trajectory_ids)))
    return flat, group_index


async def _maybe_off_loop(large: bool, function, *args):
    """`function(*args)`, on a worker thread when the work is large enough to stall the event loop."""
    if large:
        return await asyncio.to_thread(function, *args)
    return function(*args)


class RewardScorer:
    def __init__(self, registry: RewardFunctionRegistry, fetch: Fetch | None = None) -> None:
        self.registry = registry
        self._fetch = fetch

    async def score_groups(
        self,
        tenant_id: str,
        groups: Sequence[GroupInput],
        reward: RewardSpec = DEFAULT_REWARD,
        advantage: AdvantageSpec = AdvantageSpec(),  # noqa: B008 - frozen
        failure_policy: FailurePolicy = FailurePolicy.SCORE_AS_FAILURE,
    ) -> ScoreResult:
        check_advantage(advantage)
        await self.registry.load(tenant_id, [custom.name for custom in reward.custom_functions])
        terms = resolve_terms(self.registry, tenant_id, reward)
        large = check_groups(groups) > OFF_LOOP_TRAJECTORIES
        fetched = await self._fetch_stored(groups)
        discounted = advantage.credit_assignment is CreditAssignment.DISCOUNTED_RETURNS
        flat, group_index = await _maybe_off_loop(large, gather_facts, groups, fetched, discounted)

        failed = [is_failed_rollout(f.trajectory) for f in flat]
        excluded = failed if failure_policy is not FailurePolicy.SCORE_AS_FAILURE else [False] * len(flat)
        # Custom functions run only where their value counts: not on excluded or failed rollouts.
        called = [i for i in range(len(flat)) if not failed[i]]
        custom_results: dict[str, list[FunctionResult | CohortError | None]] = {}
        custom_terms = [term for term in terms if term.function.kind is not FunctionKind.BUILTIN]
        if custom_terms and called:
            subjects = [flat[i].trajectory for i in called]
            answers = await asyncio.gather(
                *(
                    self.registry.call(term.function, subjects, term.params, term.params_json)
                    for term in custom_terms
                )
            )
            for term, answer in zip(custom_terms, answers, strict=True):
                per_trajectory: list[FunctionResult | CohortError | None] = [None] * len(flat)
                for i, result in zip(called, answer, strict=True):
                    per_trajectory[i] = result
                custom_results[term.name] = per_trajectory
        scored = await _maybe_off_loop(
            large,
            _score,
            flat,
            np.asarray(group_index, dtype=np.int64),
            len(groups),
            failed,
            excluded,
            terms,
            custom_results,
            advantage,
        )
        return _assemble(groups, flat, scored, failed, failure_policy)

    async def _fetch_stored(self, groups: Sequence[GroupInput]) -> dict[str, tpb.Trajectory]:
        wanted = [trajectory_id for group in groups for trajectory_id in group.trajectory_ids]
        if not wanted:
            return {}
        if self._fetch is None:
            raise InvalidArgument("groups.trajectory_ids", "this service cannot fetch trajectories")
        stored = await self._fetch(wanted)
        return dict(zip(wanted, stored, strict=True))


@dataclass
class _Scored:
    rewards: np.ndarray
    components: list[list[Component]]
    errors: list[CohortError | None]
    included: np.ndarray
    advantages: np.ndarray
    decision_advantages: list[float]
    decision_offsets: np.ndarray
    reward_mean: np.ndarray
    reward_std: np.ndarray
    size: np.ndarray
    drop_reasons: list[str]


def _score(
    flat: list[TrajectoryFacts],
    group_index: np.ndarray,
    group_count: int,
    failed: list[bool],
    excluded: list[bool],
    terms: list[_Term],
    custom_results: dict[str, list[FunctionResult | CohortError | None]],
    advantage: AdvantageSpec,
) -> _Scored:
    """The array pass: terms, rewards, group statistics, advantages per trajectory and per decision."""
    n = len(flat)
    rewards = np.zeros(n)
    components: list[list[Component]] = [[] for _ in range(n)]
    errors: list[CohortError | None] = [None] * n
    for i, facts in enumerate(flat):
        if excluded[i]:
            continue
        total = 0.0
        parts = components[i]
        for term in terms:
            kind = term.function.kind
            if kind is FunctionKind.BUILTIN:
                if term.name == "outcome" and failed[i]:
                    value, detail = failed_rollout_outcome(facts.trajectory)
                else:
                    value, detail = BUILTINS[term.name].compute(facts, term.params)
                parts.append(Component(term.name, value, term.weight, detail))
                total += term.weight * value
                continue
            result = custom_results.get(term.name, [None] * n)[i]
            if result is None:  # not called: a failed rollout scored as failure
                detail = failed_rollout_outcome(facts.trajectory)[1]
                parts.append(Component(term.name, 0.0, term.weight, detail))
            elif isinstance(result, CohortError):
                errors[i] = result
                break
            else:
                parts.append(Component(term.name, result.value, term.weight, result.detail))
                parts.extend(
                    Component(f"{term.name}.{c.name}", c.value, 0.0, c.detail) for c in result.components
                )
                total += term.weight * result.value
        rewards[i] = total
    included = np.array([not excluded[i] and errors[i] is None for i in range(n)], dtype=bool)

    # Statistics over the included trajectories only: excluded ones get group index `group_count`,
    # a scratch bucket that is sliced away.
    in_group = np.where(included, group_index, group_count)
    reward_mean, reward_std, size = group_statistics(rewards, in_group, group_count + 1)

    decision_counts = np.fromiter((len(f.trajectory.decisions) for f in flat), dtype=np.int64, count=n)
    discounted = advantage.credit_assignment is CreditAssignment.DISCOUNTED_RETURNS
    if discounted:
        decision_steps = [_decision_steps(f) for f in flat]
        normalized, decision_returns = discounted_decision_returns(
            [f.step_rewards for f in flat], rewards, decision_steps, advantage.gamma
        )
        mean, std, _ = group_statistics(normalized, in_group, group_count + 1)
    else:
        normalized, mean, std = rewards, reward_mean, reward_std

    minimum = np.full(group_count + 1, np.inf)
    maximum = np.full(group_count + 1, -np.inf)
    np.minimum.at(minimum, in_group, normalized)
    np.maximum.at(maximum, in_group, normalized)
    drop_reasons = []
    for g in range(group_count):
        if size[g] < 2:
            drop_reasons.append(f"fewer than 2 trajectories to compare ({size[g]})")
        elif maximum[g] == minimum[g]:
            drop_reasons.append(
                "zero reward variance: every trajectory has the same "
                + ("return" if discounted else "reward")
            )
        else:
            drop_reasons.append("")
    live = np.array([not reason for reason in drop_reasons] + [False])
    estimator = ADVANTAGE_ESTIMATORS[advantage.normalization.value]
    counts = live[in_group]
    advantages = estimator(normalized, in_group, mean, std, advantage.epsilon)
    advantages = np.where(counts, advantages, 0.0)
    if discounted:
        decision_group = np.repeat(in_group, decision_counts)
        per_decision = estimator(decision_returns, decision_group, mean, std, advantage.epsilon)
        per_decision = np.where(live[decision_group], per_decision, 0.0)
    else:
        per_decision = flow_grpo_broadcast(advantages, decision_counts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(decision_counts, out=offsets[1:])
    return _Scored(
        rewards=rewards,
        components=components,
        errors=errors,
        included=included,
        advantages=advantages,
        decision_advantages=per_decision.tolist(),
        decision_offsets=offsets,
        reward_mean=reward_mean[:group_count],
        reward_std=reward_std[:group_count],
        size=size[:group_count],
        drop_reasons=drop_reasons,
    )


def _decision_steps(facts: TrajectoryFacts) -> np.ndarray:
    """The step index of each decision of a trajectory: the first step whose number is at least the
    decision's `step_number` (steps are numbered in order), or the step with that number otherwise."""
    numbers = facts.step_numbers
    chosen = [d.step_number for d in facts.trajectory.decisions]
    if all(a <= b for a, b in zip(numbers, numbers[1:], strict=False)):
        return np.searchsorted(np.asarray(numbers, dtype=np.int64), np.asarray(chosen, dtype=np.int64))
    lookup = {number: index for index, number in enumerate(numbers)}
    return np.array([lookup.get(c, 0) for c in chosen], dtype=np.int64)


def _assemble(
    groups: Sequence[GroupInput],
    flat: list[TrajectoryFacts],
    scored: _Scored,
    failed: list[bool],
    failure_policy: FailurePolicy,
) -> ScoreResult:
    rewards = scored.rewards.tolist()
    advantages = scored.advantages.tolist()
    offsets = scored.decision_offsets.tolist()
    per_decision = scored.decision_advantages
    means = scored.reward_mean.tolist()
    stds = scored.reward_std.tolist()
    sizes = scored.size.tolist()
    results = []
    dropped_groups = 0
    i = 0
    for g, group in enumerate(groups):
        reason = scored.drop_reasons[g]
        dropped_groups += bool(reason)
        result = GroupResult(
            group_id=group.group_id,
            reward_mean=means[g],
            reward_std=stds[g],
            size=sizes[g],
            dropped=bool(reason),
            drop_reason=reason,
        )
        for _ in range(len(group.trajectories) + len(group.trajectory_ids)):
            trajectory_id = flat[i].trajectory.trajectory_id
            if failed[i] and failure_policy is not FailurePolicy.SCORE_AS_FAILURE:
                result.trajectories.append(TrajectoryResult(trajectory_id, dropped=True))
                if failure_policy is FailurePolicy.RETRY:
                    result.retry_trajectory_ids.append(trajectory_id)
            elif scored.errors[i] is not None:
                result.trajectories.append(TrajectoryResult(trajectory_id, error=scored.errors[i]))
            else:
                result.trajectories.append(
                    TrajectoryResult(
                        trajectory_id,
                        reward=rewards[i],
                        components=scored.components[i],
                        advantage=advantages[i],
                        decision_advantages=per_decision[offsets[i] : offsets[i + 1]],
                    )
                )
            i += 1
        results.append(result)
    return ScoreResult(results, dropped_groups)
