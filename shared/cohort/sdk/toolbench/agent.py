"""The toolbench agent: a policy head picks the next tool, deterministic code fills its arguments.

Each step the agent asks `context.decide("next_tool", features, TOOL_OPTIONS)`, fills the chosen
tool's arguments from the parsed query and its working state, calls the tool, and records the step.
`answer` ends the run with the current value (with its verification code when `verify` confirmed
it). A wrong tool either fails (its arguments cannot be filled: the tool reports the error, the run
goes on) or succeeds and changes the current value, which then answers wrongly.

Features (what the policy sees) abstract away entities, numbers and phrasing, so a policy trained on
train queries applies unchanged to held-out ones:
    intent=<intent>                       derived from keywords (`parse_query`)
    progress=<n>                          successful tool calls so far
    need=<need>                           each part of the question still open (`open_needs`):
                                          lookup, combine, convert, reverse, uppercase, count,
                                          verify; `need=nothing` when none is
    state=<intent>|<n>|<last tool>        the conjunction: on a correct run it fixes the next tool
The oracle's choice is a function of `state=` alone, so a log-linear softmax over these keys crossed
with the options can represent it exactly; the `need=` flags are shared across intents (a pending
look-up calls for `kb_lookup` whatever the question), which is what lets a policy learn in a few
hundred rollouts. (Marginal `last=`/`status=` keys were tried and slowed learning.)

Simulated cost: with `tokens_per_step`, every step reports that many tokens (3/4 input, 1/4 output)
with `simulated=True`, and the recorded LLM interaction of each step is labelled `[simulated]`;
`step_latency_seconds` sleeps that long per step (an LLM call's stand-in).

`avoid_repeating_failed_calls`: a failed call leaves the state (so the features) unchanged, and a
near-deterministic policy would pick the same tool again until the steps run out; with this option
the decision right after a failure offers the head's options without that tool.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from cohort.api.trainer.v1 import trainer_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk.runtime import AgentContext, AgentResult, Decider, DecisionRequest, Task
from cohort.sdk.toolbench.knowledge import HEIGHT_UNIT, KNOWLEDGE_BASE
from cohort.sdk.toolbench.tasks import SOLUTIONS, check_answer, check_families
from cohort.sdk.toolbench.tools import call_tool, format_number, verified_answer

if TYPE_CHECKING:
    from cohort.sdk.recorder import TrajectoryRecorder

HEAD = "next_tool"
ANSWER = "answer"
TOOL_OPTIONS: tuple[str, ...] = (
    "calculator",
    "convert_units",
    "kb_lookup",
    "reverse_text",
    "uppercase_text",
    "count_letters",
    "verify",
    ANSWER,
)
"""The options of the `next_tool` head, in order: every tool, then the final `answer` action."""

DEFAULT_MAX_STEPS = 6
PROVIDER = "toolbench"


@dataclass(frozen=True)
class ToolbenchOptions:
    """How the built-in agent runs. `task_families` names the families queries are drawn from
    (empty: all; validated here, used by whoever generates the queries); the agent itself answers
    any toolbench query."""

    task_families: tuple[str, ...] = ()
    step_latency_seconds: float = 0.0
    """Simulated latency per step (an `asyncio.sleep`, standing in for an LLM call)."""
    tokens_per_step: int = 0
    """Simulated tokens per step, reported with `simulated=True`."""
    model: str = "toolbench-sim"
    """Model name the simulated usage is reported (and priced) under."""
    avoid_repeating_failed_calls: bool = False
    """Right after a tool call failed (the state did not change, so the features are the same and a
    near-deterministic policy would pick it again), the next decision does not offer that tool."""

    def __post_init__(self) -> None:
        check_families(self.task_families, "task_families")
        object.__setattr__(self, "task_families", tuple(self.task_families))
        latency = self.step_latency_seconds
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not math.isfinite(latency):
            raise InvalidArgument("step_latency_seconds", f"must be a finite number, not {latency!r}")
        if latency < 0:
            raise InvalidArgument("step_latency_seconds", f"must not be negative, not {latency}")
        tokens = self.tokens_per_step
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise InvalidArgument("tokens_per_step", f"must be a non-negative integer, not {tokens!r}")
        if not self.model:
            raise InvalidArgument("model", "must not be empty")
        if not isinstance(self.avoid_repeating_failed_calls, bool):
            raise InvalidArgument(
                "avoid_repeating_failed_calls", f"must be a bool, not {self.avoid_repeating_failed_calls!r}"
            )


def policy_heads() -> list[trainer_pb2.DecisionHead]:
    """The decision heads a toolbench policy needs."""
    return [
        trainer_pb2.DecisionHead(
            name=HEAD,
            options=list(TOOL_OPTIONS),
            feature_buckets=4096,
            temperature=1.0,
            description="toolbench: the next tool to call, or `answer` to finish with the current value",
        )
    ]


# --------------------------------------------------------------------------------------------------
# Reading the query


def _alternation(words: list[str]) -> str:
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True))


_ENTITY_RE = re.compile(rf"\b({_alternation(list(KNOWLEDGE_BASE))})\b", re.IGNORECASE)
_ENTITY_NAMES = {name.lower(): name for name in KNOWLEDGE_BASE}
_ATTRIBUTE_BY_KIND = {"country": "capital", "mountain": "height"}

_UNIT_SYNONYMS = {
    "km": ("kilometers", "kilometres", "kilometer", "kilometre", "km"),
    "mi": ("miles", "mile", "mi"),
    "m": ("meters", "metres", "meter", "metre"),
    "cm": ("centimeters", "centimetres", "centimeter", "centimetre", "cm"),
    "ft": ("feet", "foot", "ft"),
    "in": ("inches", "inch"),
    "kg": ("kilograms", "kilogram", "kilos", "kilo", "kg"),
    "g": ("grams", "gram"),
    "lb": ("pounds", "pound", "lbs", "lb"),
    "l": ("liters", "litres", "liter", "litre"),
    "gal": ("gallons", "gallon", "gal"),
    "c": ("degrees celsius", "celsius"),
    "f": ("degrees fahrenheit", "fahrenheit"),
}
_UNIT_BY_WORD = {word: unit for unit, words in _UNIT_SYNONYMS.items() for word in words}
_UNIT_WORDS = _alternation(list(_UNIT_BY_WORD))
_UNIT_RE = re.compile(rf"\b({_UNIT_WORDS})\b", re.IGNORECASE)
_NUMBER_UNIT_RE = re.compile(rf"(?<![\w.])(-?\d+(?:\.\d+)?)\s*({_UNIT_WORDS})\b", re.IGNORECASE)
_NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")

_OP_RE = (
    ("+", re.compile(r"\b(plus|sum|add|added)\b", re.IGNORECASE)),
    ("-", re.compile(r"\b(minus|difference|subtract|subtracted)\b", re.IGNORECASE)),
    ("*", re.compile(r"\b(times|product|multiply|multiplied)\b", re.IGNORECASE)),
    ("/", re.compile(r"\b(divided|quotient|divide)\b", re.IGNORECASE)),
)
_TEXT_OP_RE = (  # order matters: "capital letters" is uppercase, not a letter count
    ("uppercase", re.compile(r"\b(uppercase|upper\s+case|all\s+caps|capital\s+letters)\b", re.IGNORECASE)),
    ("reverse", re.compile(r"\b(backwards?|reversed?|reverse\s+order)\b", re.IGNORECASE)),
    ("count", re.compile(r"\b(letters|how\s+many\s+characters|number\s+of\s+characters)\b", re.IGNORECASE)),
)
_VERIFY_RE = re.compile(
    r"\b(verify|verified|verification|double-check|double\s+check|confirm|confirmed|check\s+code)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedQuery:
    """What the agent reads from a query's text (deterministic keyword and pattern matching)."""

    intent: str
    entities: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    op: str | None = None
    quantity: str | None = None
    """The number that carries a unit (`12` in "convert 12 km to miles")."""
    from_unit: str | None = None
    to_unit: str | None = None
    text_op: str | None = None
    verify: bool = False


@functools.lru_cache(maxsize=4096)
def parse_query(text: str) -> ParsedQuery:
    """Entities, numbers, operation, units and text operation of a query, and its intent.

    Cached: a group runs the same query several times, and the result is immutable."""
    entities = tuple(_ENTITY_NAMES[m.group(1).lower()] for m in _ENTITY_RE.finditer(text))
    rest = _ENTITY_RE.sub(" ", text) if entities else text  # "K2" is a name, not a number
    numbers = tuple(_NUMBER_RE.findall(rest))
    op = next((symbol for symbol, pattern in _OP_RE if pattern.search(rest)), None)
    quantity = from_unit = to_unit = None
    with_unit = _NUMBER_UNIT_RE.search(rest)
    if with_unit is not None:
        quantity, from_unit = with_unit.group(1), _UNIT_BY_WORD[" ".join(with_unit.group(2).lower().split())]
        rest_units = rest[: with_unit.start()] + " " + rest[with_unit.end() :]
    else:
        rest_units = rest
    target = _UNIT_RE.search(rest_units)
    if target is not None:
        to_unit = _UNIT_BY_WORD[" ".join(target.group(1).lower().split())]
    text_op = next((name for name, pattern in _TEXT_OP_RE if pattern.search(rest)), None)
    verify = _VERIFY_RE.search(rest) is not None
    kinds = [KNOWLEDGE_BASE[e]["kind"] for e in entities]
    if kinds.count("mountain") >= 2:
        intent = "multi_hop_convert" if to_unit and to_unit != HEIGHT_UNIT else "multi_hop"
    elif "country" in kinds and text_op is not None:
        intent = f"lookup_{text_op}"
    elif entities:
        intent = "kb_fact"
    elif verify and len(numbers) >= 2 and op:
        intent = "verified_calc"
    elif quantity is not None and to_unit is not None:
        intent = "unit_conversion"
    elif len(numbers) >= 2 and op:
        intent = "arithmetic"
    else:
        intent = "unknown"
    return ParsedQuery(
        intent=intent,
        entities=entities,
        numbers=numbers,
        op=op,
        quantity=quantity,
        from_unit=from_unit,
        to_unit=to_unit,
        text_op=text_op,
        verify=verify,
    )


# --------------------------------------------------------------------------------------------------
# Working state, features and argument filling


@dataclass
class AgentState:
    """What the agent knows after its calls so far."""

    query: ParsedQuery
    value: str | None = None
    """The current value: the last successful tool's result (what `answer` reports)."""
    unit: str | None = None
    looked_up: list[str] = field(default_factory=list)
    expression: str | None = None
    """The last expression the calculator evaluated (what `verify` re-checks)."""
    verified: tuple[str, str] | None = None
    """(value, code) when `verify` confirmed that value."""
    progress: int = 0
    last_tool: str = "none"
    status: str = "start"
    tools_called: list[str] = field(default_factory=list)
    succeeded: set[str] = field(default_factory=set)
    """The tools that succeeded at least once."""

    def features(self) -> dict[str, float]:
        intent, progress = self.query.intent, self.progress
        features = {
            f"intent={intent}": 1.0,
            f"progress={progress}": 1.0,
            f"state={intent}|{progress}|{self.last_tool}": 1.0,
        }
        for need in open_needs(self):
            features[f"need={need}"] = 1.0
        return features

    def snapshot(self) -> dict[str, object]:
        """The state as recorded in a step (JSON)."""
        return {
            "intent": self.query.intent,
            "progress": self.progress,
            "last_tool": self.last_tool,
            "status": self.status,
            "value": self.value,
            "unit": self.unit,
            "looked_up": list(self.looked_up),
            "verified": self.verified is not None and self.verified[0] == self.value,
            "open_needs": open_needs(self),
        }


_TEXT_TOOLS = {"reverse": "reverse_text", "uppercase": "uppercase_text", "count": "count_letters"}


def open_needs(state: AgentState) -> list[str]:
    """The parts of the question the state has not settled yet, from the query's cues (unordered)."""
    q = state.query
    needs = []
    if len(state.looked_up) < len(q.entities):
        needs.append("lookup")
    combine = len(q.entities) >= 2 or (not q.entities and len(q.numbers) >= 2 and q.op is not None)
    if combine and state.expression is None:
        needs.append("combine")
    if q.to_unit is not None and state.unit != q.to_unit:
        if q.quantity is not None or (len(q.entities) >= 2 and q.to_unit != HEIGHT_UNIT):
            needs.append("convert")
    if q.text_op is not None and q.entities and _TEXT_TOOLS[q.text_op] not in state.succeeded:
        needs.append(q.text_op)
    if q.verify and not (state.verified is not None and state.verified[0] == state.value):
        needs.append("verify")
    return needs or ["nothing"]


def fill_arguments(tool: str, state: AgentState) -> dict[str, str]:
    """The arguments the agent passes to `tool` (deterministic; empty values make the tool fail)."""
    q = state.query
    if tool == "kb_lookup":
        index = len(state.looked_up)
        if index >= len(q.entities):
            return {"entity": "", "attribute": ""}
        entity = q.entities[index]
        return {"entity": entity, "attribute": _ATTRIBUTE_BY_KIND[KNOWLEDGE_BASE[entity]["kind"]]}
    if tool == "calculator":
        if len(state.looked_up) >= 2:  # multi-hop questions ask for the difference of two look-ups
            try:
                a, b = sorted((float(v) for v in state.looked_up[-2:]), reverse=True)
            except ValueError:
                return {"expression": ""}
            return {"expression": f"{format_number(a)} - {format_number(b)}"}
        if len(q.numbers) >= 2 and q.op:
            return {"expression": f"{q.numbers[0]} {q.op} {q.numbers[1]}"}
        return {"expression": ""}
    if tool == "convert_units":
        if state.value is not None and state.unit is not None:
            return {"value": state.value, "from_unit": state.unit, "to_unit": q.to_unit or ""}
        return {"value": q.quantity or "", "from_unit": q.from_unit or "", "to_unit": q.to_unit or ""}
    if tool in ("reverse_text", "uppercase_text", "count_letters"):
        return {"text": state.value or ""}
    if tool == "verify":
        return {"expression": state.expression or "", "value": state.value or ""}
    return {}


def apply_result(tool: str, arguments: dict[str, str], result: str, state: AgentState) -> None:
    """Updates the state after `tool` succeeded with `result`."""
    state.value = result
    if tool == "kb_lookup":
        state.looked_up.append(result)
        state.unit = HEIGHT_UNIT if arguments["attribute"] == "height" else None
    elif tool == "calculator":
        state.expression = arguments["expression"]
        state.unit = state.unit if len(state.looked_up) >= 2 else None
    elif tool == "convert_units":
        state.unit = arguments["to_unit"]
    elif tool == "verify":
        state.value = arguments["value"]
        state.verified = (arguments["value"], result)
    else:
        state.unit = None


def final_answer(state: AgentState) -> str:
    if state.value is None:
        return ""
    if state.verified is not None and state.verified[0] == state.value:
        return verified_answer(state.value, state.verified[1])
    return state.value


# --------------------------------------------------------------------------------------------------
# The agent


def make_agent(
    options: ToolbenchOptions = ToolbenchOptions(),  # noqa: B008 - frozen
) -> Callable[[Task, AgentContext], Awaitable[AgentResult]]:
    """The toolbench agent: `async def agent(task, context) -> AgentResult` (public runtime only)."""
    latency = float(options.step_latency_seconds)
    tokens = int(options.tokens_per_step)
    output_tokens = tokens // 4
    input_tokens = tokens - output_tokens
    model = options.model
    tool_names = [t for t in TOOL_OPTIONS if t != ANSWER]
    avoid_repeating = options.avoid_repeating_failed_calls
    # The head's options in its order without one tool: a subset `decide` accepts for the head.
    without = {tool: tuple(t for t in TOOL_OPTIONS if t != tool) for tool in tool_names}

    async def toolbench_agent(task: Task, context: AgentContext) -> AgentResult:
        state = AgentState(parse_query(task.text))
        max_steps = context.max_steps if context.max_steps > 0 else DEFAULT_MAX_STEPS
        recorder = context.recorder
        offered = TOOL_OPTIONS
        for step in range(1, max_steps + 1):
            if latency > 0:
                await asyncio.sleep(latency)
            if tokens:
                context.report_usage(input_tokens, output_tokens, model=model, simulated=True)
            observation = state.snapshot() if recorder is not None else None
            choice = await context.decide(HEAD, state.features(), offered)
            tool = choice.option
            if tool == ANSWER:
                answer = final_answer(state)
                success = check_answer(task, answer)
                if recorder is not None:
                    _record_step(recorder, step, task, observation, tool, {"answer": answer}, True, answer)
                return AgentResult(
                    success=success,
                    final_result=answer,
                    score=1.0 if success else 0.0,
                    termination="completed",
                    detail=" > ".join([*state.tools_called, ANSWER]),
                )
            arguments = fill_arguments(tool, state)
            ok, result = call_tool(tool, arguments)
            state.tools_called.append(tool)
            offered = without[tool] if avoid_repeating and not ok else TOOL_OPTIONS
            if ok:
                apply_result(tool, arguments, result, state)
                state.progress += 1
                state.last_tool = tool
                state.succeeded.add(tool)
                state.status = "ok"
            else:
                state.status = "error"
            if recorder is not None:
                _record_step(recorder, step, task, observation, tool, arguments, ok, result)
        return AgentResult(
            success=False,
            final_result="",
            score=0.0,
            termination="max_steps",
            detail=f"no answer after {max_steps} steps: " + " > ".join(state.tools_called),
        )

    def _record_step(
        recorder: TrajectoryRecorder,
        step: int,
        task: Task,
        observation: dict[str, object] | None,
        tool: str,
        arguments: Mapping[str, str],
        ok: bool,
        result: str,
    ) -> None:
        call_id = f"call_{step}"
        messages = [
            {
                "role": "user",
                "content": json.dumps(
                    {"task": task.text, "step": step, "state": observation}, ensure_ascii=False
                ),
            }
        ]
        tool_call = {"call_id": call_id, "name": tool, "arguments": arguments, "id": None}
        response = {
            "content": f"[simulated] {'answer' if tool == ANSWER else 'call ' + tool}",
            "model": model,
            "finish_reason": "stop" if tool == ANSWER else "tool_calls",
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, "simulated": True},
            "tool_calls": [tool_call],
        }
        recorder.record_llm_interaction(messages, response, PROVIDER, model, tool_names)
        tool_result = {
            "call_id": call_id,
            "success": ok,
            "result": result if ok else None,
            "error": None if ok else result,
            "id": None,
        }
        recorder.record_agent_step(
            step,
            "completed" if tool == ANSWER else "calling_tool",
            llm_messages=messages,
            llm_response=response,
            tool_calls=[tool_call],
            tool_results=[tool_result],
            error=None if ok else result,
        )

    toolbench_agent.options = options  # type: ignore[attr-defined]
    return toolbench_agent


# --------------------------------------------------------------------------------------------------
# Reference deciders


def oracle_choice(features: Mapping[str, float]) -> str:
    """The correct next tool for a decision's features: the intent's solution, then `answer`.

    Reads only the `state=<intent>|<progress>|<last tool>` key; off the correct path (which the
    oracle itself never leaves) it answers at once.
    """
    state = next((k for k in features if k.startswith("state=")), None)
    if state is None:
        return ANSWER
    intent, progress_text, last = state[len("state=") :].split("|")
    plan = SOLUTIONS.get(intent)
    progress = int(progress_text)
    if plan is None or progress >= len(plan):
        return ANSWER
    if (progress == 0 and last == "none") or (progress > 0 and plan[progress - 1] == last):
        return plan[progress]
    return ANSWER


def _decision(
    request: DecisionRequest, options: tuple[str, ...], index: int, probabilities: list[float]
) -> trajectory_pb2.Decision:
    decision = trajectory_pb2.Decision(
        head=request.head,
        options=options,
        chosen_index=index,
        chosen=options[index],
        log_prob=math.log(probabilities[index]) if probabilities[index] < 1.0 else 0.0,
        probabilities=probabilities,
        features=dict(request.features),
        greedy=request.greedy,
    )
    decision.timestamp.FromNanoseconds(time.time_ns())
    return decision


def _options(request: DecisionRequest) -> tuple[str, ...]:
    if request.head != HEAD:
        raise InvalidArgument("head", f"toolbench deciders serve only {HEAD!r}, not {request.head!r}")
    options = tuple(request.options) or TOOL_OPTIONS
    if len(set(options)) != len(options):
        raise InvalidArgument("options", "must not repeat an option")
    return options


def oracle_decider() -> Decider:
    """A hand-written policy that picks the correct next tool (probability 1, log-prob 0)."""

    async def decide(request: DecisionRequest) -> trajectory_pb2.Decision:
        options = _options(request)
        choice = oracle_choice(request.features)
        index = options.index(choice) if choice in options else len(options) - 1
        probabilities = [0.0] * len(options)
        probabilities[index] = 1.0
        return _decision(request, options, index, probabilities)

    return decide


def uniform_decider() -> Decider:
    """A uniform policy: samples with `numpy.random.default_rng(request.seed)`; log-prob −log(n).

    Greedy decisions take the first option (argmax of a uniform distribution, ties to the first).
    """

    async def decide(request: DecisionRequest) -> trajectory_pb2.Decision:
        options = _options(request)
        n = len(options)
        index = 0 if request.greedy else int(np.random.default_rng(request.seed).integers(n))
        decision = _decision(request, options, index, [1.0 / n] * n)
        decision.log_prob = -math.log(n)
        return decision

    return decide
