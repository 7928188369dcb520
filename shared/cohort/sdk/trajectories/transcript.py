"""OpenAI-style chat transcripts -> trajectories, with an inferred outcome.

Input: chat messages as the OpenAI API takes them -- `system`/`developer`/`user`/`assistant`/`tool`
roles, `content` as a string, null or a list of parts, assistant `tool_calls`
(`{"id", "type": "function", "function": {"name", "arguments"}}`, arguments as JSON text or an
object) and `tool` messages answering them by `tool_call_id`. An assistant message may carry `usage`
(OpenAI `prompt_tokens`/`completion_tokens` with their `*_details`, or Anthropic `input_tokens`/...).

Structure:
- one LLM interaction per assistant message; its input is every message before it;
- one agent step per assistant message, with the tool results that answer its calls; the step's
  `llm_messages` are the messages new since the previous step; state `calling_tool` when the
  assistant called tools, else `completed`;
- task = the first user message's text unless given; final result = the last assistant text unless
  given; total usage summed from the messages' `usage`; start/end time and execution time from the
  arguments; the tools used are listed under `tools_used` in `extra_json`;
- termination: completed when the transcript ends with an assistant answer (text, no calls), in
  progress otherwise.

A tool result counts as failed when the message says so (`"is_error": true` or `"success": false`)
or its text starts with `error`/`exception`, or holds a traceback or `<Name>Error:`/`Exception:`.

Outcome heuristic, used when `success` is not given (`inferred` is then true). Signals and weights:
- failure: no final assistant answer (0.4); the last tool results failed (0.35); the final answer
  reports an error (a traceback, `<Name>Error:`, `failed`, `unable to`, `could not`) (0.25); the
  final answer apologises or refuses (`sorry`, `I cannot`, `unfortunately`, ...) (0.25);
- success: a final answer after tool results that all succeeded (0.3); an explicit completion
  phrase (`done`, `completed`, `successfully`, `fixed`, `here is`, ...) (0.2); a final answer that
  neither reports an error nor apologises (0.1).
Only success signals -> SUCCESS, only failure signals -> FAILURE, with confidence 0.5 + the summed
weight (at most 0.95); both -> PARTIAL with confidence 0.6 - |success - failure| (at least 0.3).
Every signal found is listed in `reasons`. When `success` is given the outcome is reported:
SUCCESS or FAILURE with confidence 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk.trajectories.usage import sum_usage

ROLES = ("system", "developer", "user", "assistant", "tool")

_FAILED_RESULT = re.compile(
    r"^\s*(?:error|exception|fatal)\b|Traceback \(most recent call last\)|\b\w*(?:Error|Exception):",
    re.IGNORECASE,
)
_ERROR_IN_ANSWER = re.compile(
    r"Traceback \(most recent call last\)|\b[A-Z]\w*(?:Error|Exception)\b:?"
    r"|\b(?:failed|failure|unable to|could not|couldn't|cannot be completed)\b",
    re.IGNORECASE,
)
_APOLOGY = re.compile(
    r"\b(?:sorry|apologi[sz]e|unfortunately|I can(?:no|')t|I am unable|I'm unable|I won't|I will not)\b",
    re.IGNORECASE,
)
_COMPLETION = re.compile(
    r"\b(?:done|completed?|finished|successfully|succeeded|fixed|resolved|solved|here is|here's"
    r"|the answer is|all tests pass)\b",
    re.IGNORECASE,
)

_FAILURE_WEIGHTS = {
    "no_final_answer": 0.4,
    "last_tool_results_failed": 0.35,
    "error_in_final_answer": 0.25,
    "apology_or_refusal": 0.25,
}
_SUCCESS_WEIGHTS = {
    "answer_after_successful_tools": 0.3,
    "completion_phrase": 0.2,
    "final_answer": 0.1,
}
_REASONS = {
    "no_final_answer": "failure: the transcript does not end with an assistant answer",
    "last_tool_results_failed": "failure: the last tool results reported errors",
    "error_in_final_answer": "failure: the final answer reports an error",
    "apology_or_refusal": "failure: the final answer apologises or refuses",
    "answer_after_successful_tools": "success: the final answer follows successful tool results",
    "completion_phrase": "success: the final answer says the task is complete",
    "final_answer": "success: the assistant gave a final answer",
}


def transcript_to_trajectory(
    messages: Sequence[Mapping[str, Any]],
    *,
    task: str | None = None,
    success: bool | None = None,
    final_result: str | None = None,
    model: str = "",
    provider: str = "",
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> trajectory_pb2.Trajectory:
    """Convert a chat transcript into a trajectory (see the module docstring)."""
    supplied: object = messages  # untyped callers (JSON) can pass anything
    if isinstance(supplied, str | bytes) or not isinstance(supplied, Sequence):
        raise InvalidArgument("messages", "must be a list of chat messages")
    parsed = [_parse_message(message, f"messages[{i}]") for i, message in enumerate(messages)]
    _check_tool_answers(messages, parsed)

    trajectory = trajectory_pb2.Trajectory(provider=provider, model=model)
    _build_interactions_and_steps(trajectory, messages, parsed, model, provider)

    first_user = next((p for p in parsed if p.role == "user"), None)
    trajectory.task = task if task is not None else (_plain_text(first_user) if first_user else "")
    answer = _final_answer(parsed)
    result = final_result if final_result is not None else answer
    if result is not None:
        trajectory.final_result = result
    _set_times(trajectory, started_at, finished_at)
    usages = [
        step.llm_response.usage for step in trajectory.agent_steps if step.llm_response.HasField("usage")
    ]
    if usages:
        trajectory.total_usage.CopyFrom(sum_usage(usages))
    tools_used = list(dict.fromkeys(call.name for step in trajectory.agent_steps for call in step.tool_calls))
    if tools_used:
        trajectory.extra_json = json.dumps({"tools_used": tools_used}, ensure_ascii=False)

    reasons = trajectory_pb2.TerminationReason
    trajectory.termination_reason = (
        reasons.TERMINATION_REASON_COMPLETED if answer is not None else reasons.TERMINATION_REASON_IN_PROGRESS
    )
    if success is not None:
        trajectory.success = success
        _reported_outcome(trajectory.outcome, success)
    else:
        _infer_outcome(trajectory.outcome, trajectory, answer)
    return trajectory


# ---------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------


class _Parsed:
    """One validated message and its proto form."""

    __slots__ = ("role", "message", "usage", "failed")

    def __init__(self, role: str, message: trajectory_pb2.Message) -> None:
        self.role = role
        self.message = message
        self.usage: trajectory_pb2.TokenUsage | None = None
        self.failed = False


_KNOWN_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name", "usage", "is_error", "success"}


def _parse_message(raw: Any, path: str) -> _Parsed:
    if not isinstance(raw, Mapping):
        raise InvalidArgument(path, "must be a JSON object")
    role = raw.get("role")
    if role is None:
        raise InvalidArgument(f"{path}.role", "is required")
    if role not in ROLES:
        raise InvalidArgument(f"{path}.role", f"unknown role {role!r}; expected one of {list(ROLES)}")
    message = trajectory_pb2.Message(role=role)
    content = raw.get("content")
    if isinstance(content, str):
        message.content = content
    elif isinstance(content, list):
        message.content_json = json.dumps(content, ensure_ascii=False)
    elif content is not None:
        raise InvalidArgument(f"{path}.content", "must be a string, null or a list of content parts")
    name = raw.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise InvalidArgument(f"{path}.name", "must be a string")
        message.name = name
    parsed = _Parsed(role, message)
    if role == "assistant":
        _parse_tool_calls(raw.get("tool_calls"), message, f"{path}.tool_calls")
        if raw.get("usage") is not None:
            parsed.usage = _parse_usage(raw["usage"], f"{path}.usage")
    elif raw.get("tool_calls"):
        raise InvalidArgument(f"{path}.tool_calls", "only assistant messages call tools")
    if role == "tool":
        call_id = raw.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidArgument(f"{path}.tool_call_id", "a tool message must name the call it answers")
        message.tool_call_id = call_id
        parsed.failed = _tool_failed(raw, _plain_text(parsed), path)
    extras = {key: value for key, value in raw.items() if key not in _KNOWN_KEYS}
    if extras:
        message.extra_json = json.dumps(extras, ensure_ascii=False)
    return parsed


def _parse_tool_calls(calls: Any, message: trajectory_pb2.Message, path: str) -> None:
    if calls is None:
        return
    if not isinstance(calls, list):
        raise InvalidArgument(path, "must be a list")
    for j, call in enumerate(calls):
        here = f"{path}[{j}]"
        if not isinstance(call, Mapping):
            raise InvalidArgument(here, "must be a JSON object")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidArgument(f"{here}.id", "must be a non-empty string")
        function = call.get("function")
        if not isinstance(function, Mapping):
            raise InvalidArgument(f"{here}.function", "must be a JSON object")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"{here}.function.name", "must be a non-empty string")
        message.tool_calls.add(
            call_id=call_id, name=name, arguments_json=_arguments_json(function.get("arguments"))
        )


def _arguments_json(arguments: Any) -> str:
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        try:
            json.loads(arguments)
            return arguments
        except ValueError:
            # Models do emit broken argument JSON; keep the text, as a JSON string, so the field
            # stays parseable and nothing is lost.
            return json.dumps(arguments, ensure_ascii=False)
    return json.dumps(arguments, ensure_ascii=False)


_USAGE_FIELDS = {
    "input_tokens": ("prompt_tokens", "input_tokens"),
    "output_tokens": ("completion_tokens", "output_tokens"),
    "cache_read_input_tokens": ("cache_read_input_tokens", "prompt_tokens_details.cached_tokens"),
    "cache_creation_input_tokens": ("cache_creation_input_tokens",),
    "reasoning_tokens": ("reasoning_tokens", "completion_tokens_details.reasoning_tokens"),
}


def _parse_usage(raw: Any, path: str) -> trajectory_pb2.TokenUsage:
    if not isinstance(raw, Mapping):
        raise InvalidArgument(path, "must be a JSON object")
    usage = trajectory_pb2.TokenUsage()
    for field, sources in _USAGE_FIELDS.items():
        for source in sources:
            value: Any = raw
            for part in source.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgument(f"{path}.{source}", "must be a non-negative integer")
            setattr(usage, field, value)
            break
    return usage


def _tool_failed(raw: Mapping[str, Any], text: str, path: str) -> bool:
    if "is_error" in raw:
        if not isinstance(raw["is_error"], bool):
            raise InvalidArgument(f"{path}.is_error", "must be true or false")
        return raw["is_error"]
    if "success" in raw:
        if not isinstance(raw["success"], bool):
            raise InvalidArgument(f"{path}.success", "must be true or false")
        return not raw["success"]
    return bool(_FAILED_RESULT.search(text))


def _check_tool_answers(raw_messages: Sequence[Any], parsed: list[_Parsed]) -> None:
    called: set[str] = set()
    for i, item in enumerate(parsed):
        if item.role == "assistant":
            called.update(call.call_id for call in item.message.tool_calls)
        elif item.role == "tool" and item.message.tool_call_id not in called:
            raise InvalidArgument(
                f"messages[{i}].tool_call_id",
                f"answers {item.message.tool_call_id!r}, which no earlier assistant message called",
            )


def _plain_text(item: _Parsed) -> str:
    message = item.message
    if message.content_json:
        parts = json.loads(message.content_json)
        return "\n".join(
            p.get("text", "") for p in parts if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return message.content


# ---------------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------------


def _build_interactions_and_steps(
    trajectory: trajectory_pb2.Trajectory,
    raw_messages: Sequence[Any],
    parsed: list[_Parsed],
    model: str,
    provider: str,
) -> None:
    step: trajectory_pb2.AgentStep | None = None
    since_last_step: list[trajectory_pb2.Message] = []
    for i, item in enumerate(parsed):
        if item.role == "tool" and step is not None and _answers(step, item.message.tool_call_id):
            step.tool_results.add(
                call_id=item.message.tool_call_id,
                success=not item.failed,
                **({"error": _plain_text(item)} if item.failed else {"result": _plain_text(item)}),
            )
            continue
        if item.role != "assistant":
            since_last_step.append(item.message)
            continue
        response = _response(item, model)
        interaction = trajectory.llm_interactions.add(
            provider=provider, model=model, tools_available_null=True
        )
        interaction.input_messages.extend(p.message for p in parsed[:i])
        interaction.response.CopyFrom(response)
        step = trajectory.agent_steps.add(
            step_number=len(trajectory.agent_steps) + 1,
            state="calling_tool" if item.message.tool_calls else "completed",
        )
        step.llm_messages.extend(since_last_step)
        step.llm_response.CopyFrom(response)
        step.tool_calls.extend(item.message.tool_calls)
        since_last_step = []


def _answers(step: trajectory_pb2.AgentStep, call_id: str) -> bool:
    return any(call.call_id == call_id for call in step.tool_calls)


def _response(item: _Parsed, model: str) -> trajectory_pb2.LlmResponse:
    response = trajectory_pb2.LlmResponse(
        model=model, finish_reason="tool_calls" if item.message.tool_calls else "stop"
    )
    text = _plain_text(item)
    if item.message.HasField("content") or item.message.content_json:
        response.content = text
    response.tool_calls.extend(item.message.tool_calls)
    if item.usage is not None:
        response.usage.CopyFrom(item.usage)
    return response


def _final_answer(parsed: list[_Parsed]) -> str | None:
    """The last message's text when it is an assistant answer (text, no tool calls)."""
    if not parsed or parsed[-1].role != "assistant" or parsed[-1].message.tool_calls:
        return None
    text = _plain_text(parsed[-1]).strip()
    return text or None


def _set_times(
    trajectory: trajectory_pb2.Trajectory, started: datetime | None, finished: datetime | None
) -> None:
    for field, moment in (("start_time", started), ("end_time", finished)):
        if moment is not None:
            aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
            getattr(trajectory, field).FromDatetime(aware.astimezone(UTC))
    if started is not None and finished is not None:
        trajectory.execution_time_seconds = (
            trajectory.end_time.ToDatetime() - trajectory.start_time.ToDatetime()
        ).total_seconds()


# ---------------------------------------------------------------------------------------------------
# Outcome
# ---------------------------------------------------------------------------------------------------


def _reported_outcome(outcome: trajectory_pb2.Outcome, success: bool) -> None:
    kinds = trajectory_pb2.OutcomeKind
    outcome.kind = kinds.OUTCOME_KIND_SUCCESS if success else kinds.OUTCOME_KIND_FAILURE
    outcome.confidence = 1.0
    outcome.reasons.append(f"reported success={str(success).lower()}")


def _infer_outcome(
    outcome: trajectory_pb2.Outcome, trajectory: trajectory_pb2.Trajectory, answer: str | None
) -> None:
    signals = _signals(trajectory, answer)
    success = sum(_SUCCESS_WEIGHTS[s] for s in signals if s in _SUCCESS_WEIGHTS)
    failure = sum(_FAILURE_WEIGHTS[s] for s in signals if s in _FAILURE_WEIGHTS)
    kinds = trajectory_pb2.OutcomeKind
    if success and not failure:
        outcome.kind, outcome.confidence = kinds.OUTCOME_KIND_SUCCESS, min(0.95, 0.5 + success)
    elif failure and not success:
        outcome.kind, outcome.confidence = kinds.OUTCOME_KIND_FAILURE, min(0.95, 0.5 + failure)
    else:
        outcome.kind, outcome.confidence = kinds.OUTCOME_KIND_PARTIAL, max(0.3, 0.6 - abs(success - failure))
    outcome.confidence = round(outcome.confidence, 4)
    outcome.reasons.extend(_REASONS[s] for s in signals)
    outcome.inferred = True


def _signals(trajectory: trajectory_pb2.Trajectory, answer: str | None) -> list[str]:
    last_results = next(
        (list(s.tool_results) for s in reversed(trajectory.agent_steps) if s.tool_results), []
    )
    signals: list[str] = []
    if answer is None:
        signals.append("no_final_answer")
    if last_results and any(not r.success for r in last_results):
        signals.append("last_tool_results_failed")
    if answer is not None:
        if _ERROR_IN_ANSWER.search(answer):
            signals.append("error_in_final_answer")
        if _APOLOGY.search(answer):
            signals.append("apology_or_refusal")
        if last_results and all(r.success for r in last_results):
            signals.append("answer_after_successful_tools")
        if _COMPLETION.search(answer):
            signals.append("completion_phrase")
        if not {"error_in_final_answer", "apology_or_refusal"} & set(signals):
            signals.append("final_answer")
    return signals
