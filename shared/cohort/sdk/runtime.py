"""The public Python agent-runtime interface: what an agent run by the collector receives.

An agent is an async function `module:function`:

    async def agent(task: Task, context: AgentContext) -> AgentResult: ...

It reads the task, takes its decisions with `await context.decide(head, features, options)`,
records what it does through `context.recorder` (Trae's recorder methods), reports token usage
with `context.report_usage(...)`, and returns an `AgentResult` (a bool, or a dict with `success`
and `final_result`, is accepted too). The collector runs it under the recorder, with a timeout and
cancellation; an exception ends the rollout as ERROR, never the group. The built-in `toolbench`
agent uses exactly this interface.

`decide` seeds each decision `seed * 1000 + n` for the n-th decision of the rollout, the same rule
remote agents follow with `TrainerService.Decide`, so a rollout is reproducible either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument

DECISIONS_PER_SEED = 1000
"""Decision n of a rollout with seed s is sampled with seed `s * DECISIONS_PER_SEED + n`."""


@dataclass(frozen=True)
class Task:
    """One query for the agent to answer."""

    query_id: str
    text: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    """Environment-specific parameters (a JSON object)."""
    expected_answer: str = ""


@dataclass(frozen=True)
class DecisionRequest:
    """What an agent asks a policy at a decision point."""

    head: str
    features: Mapping[str, float]
    options: Sequence[str] = ()
    """Candidates; for a head with fixed options, empty (all of them) or some of them in its order."""
    option_features: Sequence[Mapping[str, float]] = ()
    greedy: bool = False
    seed: int | None = None
    exploration: float = 0.0
    """ε in [0, 1): a sampled decision is drawn from `(1 - ε) * pi + ε * uniform(options)` and records
    that mixture, so training on it stays exact; greedy decisions ignore it."""


Decider = Callable[[DecisionRequest], Awaitable[trajectory_pb2.Decision]]
"""Evaluates a policy: a local snapshot in the collector's process, or `TrainerService.Decide`."""


@dataclass(frozen=True)
class Choice:
    """The outcome of a decision, as the agent sees it."""

    head: str
    options: tuple[str, ...]
    index: int
    option: str
    log_prob: float
    probabilities: tuple[float, ...]


@dataclass
class AgentResult:
    """How a run ended. `termination`: `completed` or `max_steps` (errors are raised, not returned)."""

    success: bool | None
    final_result: str = ""
    score: float | None = None
    """A score in [0, 1] when the environment reports one."""
    termination: str = "completed"
    detail: str = ""


class AgentContext:
    """Everything an agent gets besides its task: decisions, the recorder, usage reporting, limits."""

    def __init__(
        self,
        task: Task,
        *,
        decider: Decider,
        recorder: Any = None,
        seed: int = 0,
        greedy: bool = False,
        max_steps: int = 0,
        policy: trajectory_pb2.PolicyRef | None = None,
        exploration: float = 0.0,
    ) -> None:
        self.task = task
        self.recorder = recorder
        """A `cohort.sdk.TrajectoryRecorder`, started before the agent runs; None when not recording."""
        self.seed = seed
        self.greedy = greedy
        self.exploration = exploration
        """ε of every sampled decision (`DecisionRequest.exploration`); 0: the policy's own samples."""
        self.max_steps = max_steps
        """The most steps the agent may take; 0 means the agent's own default."""
        self.policy = policy or trajectory_pb2.PolicyRef()
        self.decisions: list[trajectory_pb2.Decision] = []
        self.usage = trajectory_pb2.TokenUsage(input_tokens=0, output_tokens=0)
        """Token usage reported so far, summed."""
        self.usage_model = ""
        self._decider = decider

    async def decide(
        self,
        head: str,
        features: Mapping[str, float],
        options: Sequence[str] = (),
        option_features: Sequence[Mapping[str, float]] = (),
    ) -> Choice:
        """Asks the policy to choose among `options` (or the head's fixed options) and records it."""
        if not head:
            raise InvalidArgument("head", "must not be empty")
        seed = self.seed * DECISIONS_PER_SEED + len(self.decisions)
        request = DecisionRequest(
            head=head,
            features=features,
            options=tuple(options),
            option_features=tuple(option_features),
            greedy=self.greedy,
            seed=seed,
            exploration=self.exploration,
        )
        decision = await self._decider(request)
        self.decisions.append(decision)
        if self.recorder is not None:
            self.recorder.record_decision(
                decision.head,
                decision.options,
                decision.chosen_index,
                decision.log_prob,
                features=dict(decision.features),
                probabilities=decision.probabilities,
                option_features=[dict(f.values) for f in decision.option_features],
                policy_id=decision.policy.policy_id,
                policy_version=decision.policy.version,
                step_number=decision.step_number,
                greedy=decision.greedy,
                exploration=decision.exploration,
            )
        return Choice(
            head=decision.head,
            options=tuple(decision.options),
            index=decision.chosen_index,
            option=decision.chosen,
            log_prob=decision.log_prob,
            probabilities=tuple(decision.probabilities),
        )

    def report_usage(
        self, input_tokens: int, output_tokens: int, *, model: str = "", simulated: bool = False
    ) -> None:
        """Adds token usage (for cost and budgets); `simulated` marks usage that no real model spent."""
        if input_tokens < 0 or output_tokens < 0:
            raise InvalidArgument("usage", "token counts must not be negative")
        self.usage.input_tokens += int(input_tokens)
        self.usage.output_tokens += int(output_tokens)
        self.usage.simulated = self.usage.simulated or simulated
        if model:
            self.usage_model = model


def as_agent_result(value: Any) -> AgentResult:
    """An agent's return value as an `AgentResult`: itself, a bool, or a dict with `success`."""
    if isinstance(value, AgentResult):
        return value
    if isinstance(value, bool):
        return AgentResult(success=value)
    if isinstance(value, Mapping) and "success" in value:
        score = value.get("score")
        return AgentResult(
            success=value["success"],
            final_result=str(value.get("final_result", value.get("result", "")) or ""),
            score=None if score is None else float(score),
            termination=str(value.get("termination", "completed")),
            detail=str(value.get("detail", "")),
        )
    raise InvalidArgument(
        "result",
        f"an agent must return an AgentResult, a bool or a dict with 'success', not {type(value).__name__}",
    )
