"""The built-in reward terms of one trajectory, read off its protobuf message.

Terms (each returns `(value, detail)`; the service weights them and reports each as a component):
- `outcome_term`: the reported score (`outcome.score`, in [0, 1]) when there is one, else 1/0 from
  `success`, else 1 / 0.5 / 0 from `outcome.kind` (success / partial / failure), else 0.
- `tool_usage_term`: over the tool calls of the agent steps, `(useful_reward * useful -
  failure_cost * failed - invalid_cost * invalid) / calls`. A call is *invalid* when its name is
  empty, is not among the tools the model was offered (when any `tools_available` were recorded),
  or its `arguments_json` is not a JSON object; else *failed* when its result says `success=false`;
  else *useful* when its result says `success=true`. A call with no recorded result counts only in
  the denominator. Defaults: both costs 1, `useful_reward` 0, so the term is a failure rate in [-1, 0].
- `verification_term`: 1 when a step *before the last step* (the one giving the final answer) calls
  a tool whose name matches `pattern` (a case-insensitive regex search, default `verif|check|validat`)
  and, with `require_success` (default), its result did not fail; else 0.
- `length_penalty_term`: `-min(1, extra_steps / step_budget) - min(1, extra_tokens / token_budget)`,
  each part only when its budget is set (> 0). Tokens are input + output tokens of `total_usage`
  (or of the LLM interactions when `total_usage` is empty).

Advantages (group statistics, GRPO and Dr. GRPO normalization, credit assignment to decisions) are
`cohort.learning.advantages`.
"""

from __future__ import annotations

import json
import re
from functools import cached_property

from cohort.api.trajectory.v1 import trajectory_pb2 as tpb

DEFAULT_VERIFICATION_PATTERN = r"verif|check|validat"

FAILED_TERMINATIONS = frozenset(
    {
        tpb.TERMINATION_REASON_TIMEOUT,
        tpb.TERMINATION_REASON_ERROR,
        tpb.TERMINATION_REASON_CANCELLED,
        tpb.TERMINATION_REASON_BUDGET_EXHAUSTED,
        tpb.TERMINATION_REASON_CRASHED,
        tpb.TERMINATION_REASON_IN_PROGRESS,
    }
)
"""Termination reasons of a rollout that failed as a run (not an answer that was wrong): the failure
policy applies to them. `COMPLETED` and `MAX_STEPS` are scored by their outcome; so is an unset reason
(imported files often carry none)."""

_OUTCOME_KIND_VALUES = {
    tpb.OUTCOME_KIND_SUCCESS: 1.0,
    tpb.OUTCOME_KIND_PARTIAL: 0.5,
    tpb.OUTCOME_KIND_FAILURE: 0.0,
}


def is_failed_rollout(trajectory: tpb.Trajectory) -> bool:
    return trajectory.termination_reason in FAILED_TERMINATIONS


# --- terms of one trajectory


def outcome_term(trajectory: tpb.Trajectory | TrajectoryFacts) -> tuple[float, str]:
    if isinstance(trajectory, TrajectoryFacts):
        trajectory = trajectory.trajectory
    outcome = trajectory.outcome
    if outcome.HasField("score"):
        return float(outcome.score), "outcome.score"
    if trajectory.HasField("success"):
        return (1.0, "success") if trajectory.success else (0.0, "failure")
    value = _OUTCOME_KIND_VALUES.get(outcome.kind)
    if value is not None:
        return value, tpb.OutcomeKind.Name(outcome.kind).removeprefix("OUTCOME_KIND_").lower()
    return 0.0, "no outcome reported"


def failed_rollout_outcome(trajectory: tpb.Trajectory) -> tuple[float, str]:
    """The outcome term of a failed rollout scored as a failure."""
    reason = tpb.TerminationReason.Name(trajectory.termination_reason).removeprefix("TERMINATION_REASON_")
    return 0.0, f"rollout failed ({reason}); scored as failure"


def _is_json_object(text: str) -> bool:
    if not text:
        return True  # no arguments at all: a call to a tool that takes none
    if text[0] != "{":
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


class TrajectoryFacts:
    """What the built-in terms and credit assignment read of a trajectory, each read once, when first
    needed.

    Reading proto fields (each access builds a Python object) is most of the cost of scoring, so the
    steps are walked once for the tool calls (tool usage, verification) and once for the step numbers
    and rewards (discounted returns), and only by the terms that are switched on. Terms accept either
    this or the `Trajectory` itself.
    """

    def __init__(self, trajectory: tpb.Trajectory) -> None:
        self.trajectory = trajectory

    @cached_property
    def step_count(self) -> int:
        return len(self.trajectory.agent_steps)

    @cached_property
    def offered(self) -> set[str]:
        """The tools the model was offered, over every LLM interaction."""
        offered: set[str] = set()
        for interaction in self.trajectory.llm_interactions:
            offered.update(interaction.tools_available)
        return offered

    @cached_property
    def calls(self) -> list[tuple[int, str, str, bool | None]]:
        """Per tool call, in order: (step index, tool name, arguments JSON, its result's success or None)."""
        calls: list[tuple[int, str, str, bool | None]] = []
        for index, step in enumerate(self.trajectory.agent_steps):
            tool_calls = step.tool_calls
            if not tool_calls:
                continue
            results = step.tool_results
            if len(tool_calls) == 1 and len(results) == 1:  # the common case, without a lookup table
                call, result = tool_calls[0], results[0]
                succeeded = result.success if result.call_id == call.call_id else None
                calls.append((index, call.name, call.arguments_json, succeeded))
                continue
            by_id = {r.call_id: r.success for r in results}
            for call in tool_calls:
                calls.append((index, call.name, call.arguments_json, by_id.get(call.call_id)))
        return calls

    @cached_property
    def step_numbers(self) -> list[int]:
        self._read_steps()
        return self.step_numbers

    @cached_property
    def step_rewards(self) -> list[float]:
        """Each step's own reward, 0 when unset."""
        self._read_steps()
        return self.step_rewards

    def _read_steps(self) -> None:
        numbers, rewards = [], []
        for step in self.trajectory.agent_steps:
            numbers.append(step.step_number)
            rewards.append(step.step_reward)
        self.__dict__["step_numbers"], self.__dict__["step_rewards"] = numbers, rewards


def facts_of(trajectory: tpb.Trajectory | TrajectoryFacts) -> TrajectoryFacts:
    return trajectory if isinstance(trajectory, TrajectoryFacts) else TrajectoryFacts(trajectory)


def tool_usage_term(
    trajectory: tpb.Trajectory | TrajectoryFacts,
    *,
    failure_cost: float = 1.0,
    invalid_cost: float = 1.0,
    useful_reward: float = 0.0,
) -> tuple[float, str]:
    facts = facts_of(trajectory)
    offered = facts.offered
    useful = failed = invalid = 0
    for _, name, arguments, succeeded in facts.calls:
        if not name or (offered and name not in offered) or not _is_json_object(arguments):
            invalid += 1
        elif succeeded is False:
            failed += 1
        elif succeeded:
            useful += 1
    calls = len(facts.calls)
    if calls == 0:
        return 0.0, "no tool calls"
    value = (useful_reward * useful - failure_cost * failed - invalid_cost * invalid) / calls
    return value, f"{calls} calls: {useful} useful, {failed} failed, {invalid} invalid"


_DEFAULT_VERIFICATION = re.compile(DEFAULT_VERIFICATION_PATTERN, re.IGNORECASE)


def verification_term(
    trajectory: tpb.Trajectory | TrajectoryFacts,
    *,
    pattern: str | re.Pattern[str] = _DEFAULT_VERIFICATION,
    require_success: bool = True,
) -> tuple[float, str]:
    facts = facts_of(trajectory)
    matcher = re.compile(pattern, re.IGNORECASE) if isinstance(pattern, str) else pattern
    last = facts.step_count - 1
    for index, name, _, succeeded in facts.calls:
        if index >= last:
            break
        if matcher.search(name) and not (require_success and succeeded is False):
            return 1.0, f"{name} at step {facts.step_numbers[index]}"
    return 0.0, "no verification step before the final answer"


def token_count(trajectory: tpb.Trajectory | TrajectoryFacts) -> int:
    t = trajectory.trajectory if isinstance(trajectory, TrajectoryFacts) else trajectory
    usage = t.total_usage
    if usage.HasField("input_tokens") or usage.HasField("output_tokens"):
        return usage.input_tokens + usage.output_tokens
    return sum(i.response.usage.input_tokens + i.response.usage.output_tokens for i in t.llm_interactions)


def length_penalty_term(
    trajectory: tpb.Trajectory | TrajectoryFacts, *, step_budget: int = 0, token_budget: int = 0
) -> tuple[float, str]:
    value = 0.0
    details = []
    if step_budget > 0:
        is_facts = isinstance(trajectory, TrajectoryFacts)
        steps = trajectory.step_count if is_facts else len(trajectory.agent_steps)
        value -= min(1.0, max(0, steps - step_budget) / step_budget)
        details.append(f"{steps}/{step_budget} steps")
    if token_budget > 0:
        tokens = token_count(trajectory)
        value -= min(1.0, max(0, tokens - token_budget) / token_budget)
        details.append(f"{tokens}/{token_budget} tokens")
    return value, ", ".join(details) or "no budget"
