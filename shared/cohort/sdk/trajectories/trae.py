"""Trae Agent trajectory JSON <-> Cohort `Trajectory`, round-trip exact.

Every documented Trae key maps to its proto field (see `trajectory.proto`); nullable values are
`optional` fields, `null` lists set the `*_null` flags, a tool call's `arguments` is kept as the text
`json.dumps(arguments, ensure_ascii=False)` and read back with `json.loads` (which reproduces the value
and its key order), a message `content` that is not a string (a list of parts) goes to `content_json`,
and every undocumented key goes to the `extra_json` of its level, key order preserved.

What the proto cannot say by itself is kept in the same `extra_json`, under the reserved key
`"__cohort_trae"` (`HINT_KEY`), and removed again on export:

- `keys`: the object's key order, only when it is not the canonical one (documented keys in Trae's
  order, then the extra keys) -- a documented key the file left out, or keys in another order;
- `null`: list keys written `null` where the proto has no null flag (`llm_interactions`,
  `agent_steps`, `input_messages`); `empty`: a response's `tool_calls` written `[]` (Trae's writer
  says `null` for none, so that is the canonical spelling);
- `time`: a timestamp whose spelling is not the canonical one (`""`, `Z`, another offset, fraction
  digits `datetime.isoformat` would not write), verbatim;
- top level only, `timestamps: "naive"`: the file's timestamps carry no offset (Trae writes
  `datetime.now().isoformat()`), so the canonical spelling is naive rather than `+00:00`.

Naive timestamps are read as UTC: the file does not say its zone and Cohort stores UTC. A hint is
used only while it still describes the stored value (a `time` hint must parse to the stored
instant, a `keys` hint skips keys whose value became non-empty), so an edited trajectory exports its
new values. Native trajectories (no hints) export every documented key, `null` where unset, with
`+00:00` timestamps. Trae's `execution_time` is always written as a float.

Importing also fills the Cohort fields Trae implies: `termination_reason` (in progress without
`end_time`, max steps when the run failed at its step limit, error when the last step is in the
`error` state, completed otherwise) and a reported (not inferred) `outcome` from `success`.

A file written by Cohort's recorder has one more top-level key, `"cohort"` (its format:
`cohort.sdk.trajectories.cohort_block`): its values (trajectory id, agent, labels, job fields,
policy, decisions, termination, outcome, usage and cost) go to the message's own fields, over what
Trae implies, and the top-level hint notes `cohort: true` so the export writes the block again,
from the fields (so it shows their current values), after the Trae keys and any extra key. A
`"cohort": null` is an ordinary extra key; any other non-object is an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk.trajectories.cohort_block import COHORT_KEY, apply_cohort, cohort_section
from cohort.sdk.trajectories.jsonl import json_line

HINT_KEY = "__cohort_trae"

TOP_KEYS = (
    "task",
    "start_time",
    "end_time",
    "provider",
    "model",
    "max_steps",
    "llm_interactions",
    "agent_steps",
    "success",
    "final_result",
    "execution_time",
)
INTERACTION_KEYS = ("timestamp", "provider", "model", "input_messages", "response", "tools_available")
RESPONSE_KEYS = ("content", "model", "finish_reason", "usage", "tool_calls")
USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "reasoning_tokens",
)
TOOL_CALL_KEYS = ("call_id", "name", "arguments", "id")
TOOL_RESULT_KEYS = ("call_id", "success", "result", "error", "id")
STEP_KEYS = (
    "step_number",
    "timestamp",
    "state",
    "llm_messages",
    "llm_response",
    "tool_calls",
    "tool_results",
    "reflection",
    "error",
)
# Trae writes `tool_call`/`tool_result` only when a message carries one.
MESSAGE_KEYS = ("role", "content", "tool_call", "tool_result")
# OpenAI-style fields of natively recorded messages, written after Trae's own when set.
_MESSAGE_EXPORT_ONLY_KEYS = ("tool_calls", "tool_call_id", "name")

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

_ISO_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)


# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------


def trae_to_trajectory(document: Mapping[str, Any]) -> trajectory_pb2.Trajectory:
    """Convert one Trae trajectory document (parsed JSON) into a `Trajectory`."""
    if not isinstance(document, Mapping):
        raise InvalidArgument("document", "a Trae trajectory must be a JSON object")
    block = document.get(COHORT_KEY)
    if block is not None and not isinstance(block, Mapping):
        raise InvalidArgument(COHORT_KEY, "must be a JSON object (Cohort's additions) or null")
    naive = _document_timestamps_are_naive(document)
    trajectory = trajectory_pb2.Trajectory()
    hint: dict[str, Any] = {"timestamps": "naive"} if naive else {}
    _read_top_level(trajectory, document, hint, naive)
    if block is None:
        _store_extras(trajectory, document, TOP_KEYS, TOP_KEYS, hint)
    else:
        hint["cohort"] = True
        _store_extras(trajectory, document, (*TOP_KEYS, COHORT_KEY), TOP_KEYS, hint, trailing=(COHORT_KEY,))
    _derive_run_state(trajectory)
    if block is not None:
        apply_cohort(trajectory, block)
    return trajectory


def mark_cohort_block(trajectory: trajectory_pb2.Trajectory) -> None:
    """Notes in the top-level hint that the trajectory has a `cohort` block to export.

    For a builder that sets the fields itself; `trae_to_trajectory` notes it while reading.
    """
    extras, hint = _load_extras(trajectory, "")
    hint["cohort"] = True
    extras[HINT_KEY] = hint
    trajectory.extra_json = json.dumps(extras, ensure_ascii=False)


def trajectory_to_trae(trajectory: trajectory_pb2.Trajectory) -> dict[str, Any]:
    """The Trae document of a trajectory: the exact inverse of `trae_to_trajectory`."""
    extras, hint = _load_extras(trajectory, "")
    naive = hint.get("timestamps") == "naive"
    t = trajectory
    values: dict[str, Any] = {
        "task": t.task,
        "start_time": _write_time(t.start_time, t.HasField("start_time"), "start_time", hint, naive),
        "end_time": _write_time(t.end_time, t.HasField("end_time"), "end_time", hint, naive),
        "provider": t.provider,
        "model": t.model,
        "max_steps": t.max_steps if t.HasField("max_steps") else None,
        "llm_interactions": _write_list(
            [
                _write_interaction(x, f"llm_interactions[{i}]", naive)
                for i, x in enumerate(t.llm_interactions)
            ],
            "llm_interactions",
            hint,
            empty_is_null=False,
        ),
        "agent_steps": _write_list(
            [_write_step(x, f"agent_steps[{i}]", naive) for i, x in enumerate(t.agent_steps)],
            "agent_steps",
            hint,
            empty_is_null=False,
        ),
        "success": t.success if t.HasField("success") else None,
        "final_result": t.final_result if t.HasField("final_result") else None,
        "execution_time": t.execution_time_seconds if t.HasField("execution_time_seconds") else None,
    }
    if hint.get("cohort") is not True:
        return _assemble(values, TOP_KEYS, extras, hint)
    values[COHORT_KEY] = cohort_section(t)
    return _assemble(values, TOP_KEYS, extras, hint, trailing=(COHORT_KEY,))


def dumps_trae(document: Mapping[str, Any]) -> str:
    """Serialize a Trae document the way Trae's own recorder writes its files."""
    return json.dumps(document, indent=2, ensure_ascii=False)


def trajectory_to_trae_json(trajectory: trajectory_pb2.Trajectory) -> str:
    """The Trae document of a trajectory as single-line JSON (one export record)."""
    return json_line(trajectory_to_trae(trajectory))


def load_trae_file(path: str | Path) -> list[trajectory_pb2.Trajectory]:
    """Read a Trae file holding one trajectory object or a JSON array of them."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(str(path), f"cannot read the file: {exc}") from exc
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            str(path), f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    if isinstance(parsed, Mapping):
        return [_convert_in_file(parsed, path, "")]
    if isinstance(parsed, list):
        return [_convert_in_file(item, path, f"[{i}]") for i, item in enumerate(parsed)]
    raise InvalidArgument(str(path), "must hold a JSON object or an array of objects")


def _convert_in_file(document: Any, path: Path, prefix: str) -> trajectory_pb2.Trajectory:
    if not isinstance(document, Mapping):
        raise InvalidArgument(prefix or "document", f"{path}: a Trae trajectory must be a JSON object")
    try:
        return trae_to_trajectory(document)
    except InvalidArgument as exc:
        field = ".".join(p for p in (prefix, exc.field) if p) if prefix else exc.field
        raise InvalidArgument(field, f"{path}: {exc.description}") from exc


# ---------------------------------------------------------------------------------------------------
# Reading: Trae -> proto
# ---------------------------------------------------------------------------------------------------


def _read_top_level(
    t: trajectory_pb2.Trajectory, doc: Mapping[str, Any], hint: dict[str, Any], naive: bool
) -> None:
    t.task = _string(doc, "task", "")
    _read_time(doc, "start_time", "", t.start_time, hint, naive)
    _read_time(doc, "end_time", "", t.end_time, hint, naive)
    t.provider = _string(doc, "provider", "")
    t.model = _string(doc, "model", "")
    _set_optional(t, "max_steps", _opt_int(doc, "max_steps", "", _INT32))
    for i, item in enumerate(_list_without_flag(doc, "llm_interactions", "", hint)):
        _read_interaction(t.llm_interactions.add(), item, f"llm_interactions[{i}]", naive)
    for i, item in enumerate(_list_without_flag(doc, "agent_steps", "", hint)):
        _read_step(t.agent_steps.add(), item, f"agent_steps[{i}]", naive)
    _set_optional(t, "success", _opt_bool(doc, "success", ""))
    _set_optional(t, "final_result", _opt_string(doc, "final_result", ""))
    _set_optional(t, "execution_time_seconds", _opt_number(doc, "execution_time", ""))


def _read_interaction(x: trajectory_pb2.LlmInteraction, value: Any, path: str, naive: bool) -> None:
    obj = _object(value, path)
    hint: dict[str, Any] = {}
    _read_time(obj, "timestamp", path, x.timestamp, hint, naive)
    x.provider = _string(obj, "provider", path)
    x.model = _string(obj, "model", path)
    for i, item in enumerate(_list_without_flag(obj, "input_messages", path, hint)):
        _read_message(x.input_messages.add(), item, f"{path}.input_messages[{i}]")
    if obj.get("response") is not None:
        _read_response(x.response, obj["response"], f"{path}.response")
    tools = _opt_list(obj, "tools_available", path)
    if tools is None:
        x.tools_available_null = "tools_available" in obj
    else:
        x.tools_available.extend(_string_item(v, f"{path}.tools_available[{i}]") for i, v in enumerate(tools))
    _store_extras(x, obj, INTERACTION_KEYS, INTERACTION_KEYS, hint)


def _read_response(r: trajectory_pb2.LlmResponse, value: Any, path: str) -> None:
    obj = _object(value, path)
    hint: dict[str, Any] = {}
    _set_optional(r, "content", _opt_string(obj, "content", path))
    _set_optional(r, "model", _opt_string(obj, "model", path))
    _set_optional(r, "finish_reason", _opt_string(obj, "finish_reason", path))
    if obj.get("usage") is not None:
        _read_usage(r.usage, obj["usage"], f"{path}.usage")
    calls = _opt_list(obj, "tool_calls", path)
    if calls == []:
        hint["empty"] = ["tool_calls"]
    for i, item in enumerate(calls or ()):
        _read_tool_call(r.tool_calls.add(), item, f"{path}.tool_calls[{i}]")
    _store_extras(r, obj, RESPONSE_KEYS, RESPONSE_KEYS, hint)


def _read_usage(u: trajectory_pb2.TokenUsage, value: Any, path: str) -> None:
    obj = _object(value, path)
    for key in USAGE_KEYS:
        _set_optional(u, key, _opt_int(obj, key, path, _INT64))
    _store_extras(u, obj, USAGE_KEYS, USAGE_KEYS, {})


def _read_tool_call(c: trajectory_pb2.ToolCall, value: Any, path: str) -> None:
    obj = _object(value, path)
    c.call_id = _string(obj, "call_id", path)
    c.name = _string(obj, "name", path)
    if "arguments" in obj:
        c.arguments_json = json.dumps(obj["arguments"], ensure_ascii=False)
    _set_optional(c, "id", _opt_string(obj, "id", path))
    _store_extras(c, obj, TOOL_CALL_KEYS, TOOL_CALL_KEYS, {})


def _read_tool_result(r: trajectory_pb2.ToolResult, value: Any, path: str) -> None:
    obj = _object(value, path)
    r.call_id = _string(obj, "call_id", path)
    r.success = _bool(obj, "success", path)
    _set_optional(r, "result", _opt_string(obj, "result", path))
    _set_optional(r, "error", _opt_string(obj, "error", path))
    _set_optional(r, "id", _opt_string(obj, "id", path))
    _store_extras(r, obj, TOOL_RESULT_KEYS, TOOL_RESULT_KEYS, {})


def _read_message(m: trajectory_pb2.Message, value: Any, path: str) -> None:
    obj = _object(value, path)
    m.role = _string(obj, "role", path)
    content = obj.get("content")
    if isinstance(content, str):
        m.content = content
    elif content is not None:
        m.content_json = json.dumps(content, ensure_ascii=False)
    if obj.get("tool_call") is not None:
        _read_tool_call(m.tool_call, obj["tool_call"], f"{path}.tool_call")
    if obj.get("tool_result") is not None:
        _read_tool_result(m.tool_result, obj["tool_result"], f"{path}.tool_result")
    _store_extras(m, obj, MESSAGE_KEYS, _message_keys(m), {})


def _read_step(s: trajectory_pb2.AgentStep, value: Any, path: str, naive: bool) -> None:
    obj = _object(value, path)
    hint: dict[str, Any] = {}
    s.step_number = _int(obj, "step_number", path, _INT32)
    _read_time(obj, "timestamp", path, s.timestamp, hint, naive)
    s.state = _string(obj, "state", path)
    messages = _opt_list(obj, "llm_messages", path)
    s.llm_messages_null = messages is None and "llm_messages" in obj
    for i, item in enumerate(messages or ()):
        _read_message(s.llm_messages.add(), item, f"{path}.llm_messages[{i}]")
    if obj.get("llm_response") is not None:
        _read_response(s.llm_response, obj["llm_response"], f"{path}.llm_response")
    calls = _opt_list(obj, "tool_calls", path)
    s.tool_calls_null = calls is None and "tool_calls" in obj
    for i, item in enumerate(calls or ()):
        _read_tool_call(s.tool_calls.add(), item, f"{path}.tool_calls[{i}]")
    results = _opt_list(obj, "tool_results", path)
    s.tool_results_null = results is None and "tool_results" in obj
    for i, item in enumerate(results or ()):
        _read_tool_result(s.tool_results.add(), item, f"{path}.tool_results[{i}]")
    _set_optional(s, "reflection", _opt_string(obj, "reflection", path))
    _set_optional(s, "error", _opt_string(obj, "error", path))
    _store_extras(s, obj, STEP_KEYS, STEP_KEYS, hint)


def _derive_run_state(t: trajectory_pb2.Trajectory) -> None:
    reasons = trajectory_pb2.TerminationReason
    if not t.HasField("end_time"):
        t.termination_reason = reasons.TERMINATION_REASON_IN_PROGRESS
    elif t.agent_steps and t.agent_steps[-1].state == "error":
        t.termination_reason = reasons.TERMINATION_REASON_ERROR
    elif t.HasField("success") and not t.success and t.max_steps and len(t.agent_steps) >= t.max_steps:
        t.termination_reason = reasons.TERMINATION_REASON_MAX_STEPS
    else:
        t.termination_reason = reasons.TERMINATION_REASON_COMPLETED
    if t.HasField("success") and t.HasField("end_time"):
        kinds = trajectory_pb2.OutcomeKind
        t.outcome.kind = kinds.OUTCOME_KIND_SUCCESS if t.success else kinds.OUTCOME_KIND_FAILURE
        t.outcome.confidence = 1.0
        t.outcome.reasons.append(f"Trae reported success={str(t.success).lower()}")


# ---------------------------------------------------------------------------------------------------
# Writing: proto -> Trae
# ---------------------------------------------------------------------------------------------------


def _write_interaction(x: trajectory_pb2.LlmInteraction, path: str, naive: bool) -> dict[str, Any]:
    extras, hint = _load_extras(x, path)
    values = {
        "timestamp": _write_time(x.timestamp, x.HasField("timestamp"), "timestamp", hint, naive),
        "provider": x.provider,
        "model": x.model,
        "input_messages": _write_list(
            [_write_message(m, f"{path}.input_messages[{i}]") for i, m in enumerate(x.input_messages)],
            "input_messages",
            hint,
            empty_is_null=False,
        ),
        "response": _write_response(x.response, f"{path}.response") if x.HasField("response") else None,
        "tools_available": None if x.tools_available_null else list(x.tools_available),
    }
    return _assemble(values, INTERACTION_KEYS, extras, hint)


def _write_response(r: trajectory_pb2.LlmResponse, path: str) -> dict[str, Any]:
    extras, hint = _load_extras(r, path)
    values = {
        "content": r.content if r.HasField("content") else None,
        "model": r.model if r.HasField("model") else None,
        "finish_reason": r.finish_reason if r.HasField("finish_reason") else None,
        "usage": _write_usage(r.usage, f"{path}.usage") if r.HasField("usage") else None,
        "tool_calls": _write_list(
            [_write_tool_call(c, f"{path}.tool_calls[{i}]") for i, c in enumerate(r.tool_calls)],
            "tool_calls",
            hint,
            empty_is_null=True,
        ),
    }
    return _assemble(values, RESPONSE_KEYS, extras, hint)


def _write_usage(u: trajectory_pb2.TokenUsage, path: str) -> dict[str, Any]:
    extras, hint = _load_extras(u, path)
    values = {key: getattr(u, key) if u.HasField(key) else None for key in USAGE_KEYS}
    return _assemble(values, USAGE_KEYS, extras, hint)


def _write_tool_call(c: trajectory_pb2.ToolCall, path: str) -> dict[str, Any]:
    extras, hint = _load_extras(c, path)
    values = {
        "call_id": c.call_id,
        "name": c.name,
        "arguments": _json_or_text(c.arguments_json, default={}),
        "id": c.id if c.HasField("id") else None,
    }
    return _assemble(values, TOOL_CALL_KEYS, extras, hint)


def _write_tool_result(r: trajectory_pb2.ToolResult, path: str) -> dict[str, Any]:
    extras, hint = _load_extras(r, path)
    values = {
        "call_id": r.call_id,
        "success": r.success,
        "result": r.result if r.HasField("result") else None,
        "error": r.error if r.HasField("error") else None,
        "id": r.id if r.HasField("id") else None,
    }
    return _assemble(values, TOOL_RESULT_KEYS, extras, hint)


def _write_message(m: trajectory_pb2.Message, path: str) -> dict[str, Any]:
    extras, hint = _load_extras(m, path)
    if m.content_json:
        content = _json_or_text(m.content_json, default=None)
    else:
        content = m.content if m.HasField("content") else None
    values = {
        "role": m.role,
        "content": content,
        "tool_call": _write_tool_call(m.tool_call, f"{path}.tool_call") if m.HasField("tool_call") else None,
        "tool_result": (
            _write_tool_result(m.tool_result, f"{path}.tool_result") if m.HasField("tool_result") else None
        ),
        "tool_calls": [_write_tool_call(c, f"{path}.tool_calls[{i}]") for i, c in enumerate(m.tool_calls)]
        or None,
        "tool_call_id": m.tool_call_id or None,
        "name": m.name or None,
    }
    return _assemble(values, _message_keys(m), extras, hint)


def _write_step(s: trajectory_pb2.AgentStep, path: str, naive: bool) -> dict[str, Any]:
    extras, hint = _load_extras(s, path)
    values = {
        "step_number": s.step_number,
        "timestamp": _write_time(s.timestamp, s.HasField("timestamp"), "timestamp", hint, naive),
        "state": s.state,
        "llm_messages": None
        if s.llm_messages_null
        else [_write_message(m, f"{path}.llm_messages[{i}]") for i, m in enumerate(s.llm_messages)],
        "llm_response": (
            _write_response(s.llm_response, f"{path}.llm_response") if s.HasField("llm_response") else None
        ),
        "tool_calls": None
        if s.tool_calls_null
        else [_write_tool_call(c, f"{path}.tool_calls[{i}]") for i, c in enumerate(s.tool_calls)],
        "tool_results": None
        if s.tool_results_null
        else [_write_tool_result(r, f"{path}.tool_results[{i}]") for i, r in enumerate(s.tool_results)],
        "reflection": s.reflection if s.HasField("reflection") else None,
        "error": s.error if s.HasField("error") else None,
    }
    return _assemble(values, STEP_KEYS, extras, hint)


def _message_keys(m: trajectory_pb2.Message) -> list[str]:
    keys = ["role", "content"]
    if m.HasField("tool_call"):
        keys.append("tool_call")
    if m.HasField("tool_result"):
        keys.append("tool_result")
    if m.tool_calls:
        keys.append("tool_calls")
    if m.tool_call_id:
        keys.append("tool_call_id")
    if m.name:
        keys.append("name")
    return keys


def _json_or_text(text: str, *, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        # A natively recorded value that is not JSON still has to export; the raw text is the
        # most faithful JSON value for it.
        return text


# ---------------------------------------------------------------------------------------------------
# Extras, hints and key order
# ---------------------------------------------------------------------------------------------------


def _store_extras(
    message: Any,
    obj: Mapping[str, Any],
    documented: Sequence[str],
    canonical: Sequence[str],
    hint: dict[str, Any],
    *,
    trailing: Sequence[str] = (),
) -> None:
    """`trailing`: documented keys whose canonical place is after the extra keys (`cohort`)."""
    extras = {key: value for key, value in obj.items() if key not in documented}
    keys = list(obj)
    if keys != [*canonical, *extras, *trailing]:
        hint["keys"] = keys
    if hint:
        extras[HINT_KEY] = hint
    if extras:
        message.extra_json = json.dumps(extras, ensure_ascii=False)


def _load_extras(message: Any, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not message.extra_json:
        return {}, {}
    field = f"{path}.extra_json" if path else "extra_json"
    try:
        extras = json.loads(message.extra_json)
    except ValueError as exc:
        raise InvalidArgument(field, f"is not valid JSON: {exc}") from exc
    if not isinstance(extras, dict):
        raise InvalidArgument(field, "must be a JSON object")
    hint = extras.pop(HINT_KEY, None)
    return extras, hint if isinstance(hint, dict) else {}


def _assemble(
    values: dict[str, Any],
    canonical: Sequence[str],
    extras: dict[str, Any],
    hint: dict[str, Any],
    *,
    trailing: Sequence[str] = (),
) -> dict[str, Any]:
    order = hint.get("keys")
    if not isinstance(order, list):
        document = {key: values[key] for key in canonical}
        for key, value in extras.items():
            document.setdefault(key, value)
        for key in trailing:
            document.setdefault(key, values[key])
        return document
    document = {}
    for key in order:
        # Extras first: a message's OpenAI-style keys are extras on import but also export-only fields.
        if key in extras:
            document[key] = extras[key]
        elif key in values:
            document[key] = values[key]
    # Keys the original file did not have appear only when they now hold something (an edit).
    for key in canonical:
        if key not in document and not _is_empty(values[key]):
            document[key] = values[key]
    for key, value in extras.items():
        document.setdefault(key, value)
    for key in trailing:
        document.setdefault(key, values[key])
    return document


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, list | dict) and not value)


def _list_without_flag(obj: Mapping[str, Any], key: str, path: str, hint: dict[str, Any]) -> list[Any]:
    """A list the proto cannot mark null: a `null` in the file is remembered in the hint."""
    value = _opt_list(obj, key, path)
    if value is None and key in obj:
        hint.setdefault("null", []).append(key)
    return value or []


def _write_list(items: list[Any], key: str, hint: dict[str, Any], *, empty_is_null: bool) -> list[Any] | None:
    if items:
        return items
    if empty_is_null:
        return [] if key in hint.get("empty", ()) else None
    return None if key in hint.get("null", ()) else []


# ---------------------------------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------------------------------


def _document_timestamps_are_naive(document: Mapping[str, Any]) -> bool:
    """Whether the first timestamp of the file has no offset (Trae's own writer never adds one)."""
    for text in _timestamp_texts(document):
        match = _ISO_TIMESTAMP.fullmatch(text) if isinstance(text, str) else None
        if match:
            return match.group(8) is None
    return False


def _timestamp_texts(document: Mapping[str, Any]) -> Iterator[Any]:
    yield document.get("start_time")
    yield document.get("end_time")
    for key in ("llm_interactions", "agent_steps"):
        items = document.get(key)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, Mapping):
                    yield item.get("timestamp")


def parse_timestamp(text: str) -> timestamp_pb2.Timestamp:
    """Parse ISO-8601 (naive = UTC; up to nanoseconds); raises ValueError."""
    match = _ISO_TIMESTAMP.fullmatch(text)
    if not match:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    zone = UTC if offset in (None, "Z", "z") else _parse_offset(offset)
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=zone)
    result = timestamp_pb2.Timestamp(
        seconds=(moment - _EPOCH) // timedelta(seconds=1), nanos=int((fraction or "").ljust(9, "0"))
    )
    return result


def _parse_offset(offset: str) -> timezone:
    sign = -1 if offset[0] == "-" else 1
    digits = offset[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def render_timestamp(ts: timestamp_pb2.Timestamp, *, naive: bool = False) -> str:
    """ISO-8601 as Python's `isoformat` writes it (fraction only when non-zero), in UTC."""
    moment = _EPOCH_NAIVE + timedelta(seconds=ts.seconds)
    micros, rest = divmod(ts.nanos, 1000)
    if rest:
        text = f"{moment.isoformat()}.{ts.nanos:09d}"
    else:
        text = moment.replace(microsecond=micros).isoformat()
    return text if naive else text + "+00:00"


def _read_time(
    obj: Mapping[str, Any],
    key: str,
    path: str,
    target: timestamp_pb2.Timestamp,
    hint: dict[str, Any],
    naive: bool,
) -> None:
    value = obj.get(key)
    if value is None:
        return
    field = _at(path, key)
    if not isinstance(value, str):
        raise InvalidArgument(field, "must be an ISO-8601 timestamp string")
    if value == "":
        # Trae's recorder writes "" before a run has started or ended.
        hint.setdefault("time", {})[key] = value
        return
    try:
        target.CopyFrom(parse_timestamp(value))
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(field, f"is not an ISO-8601 timestamp: {value!r}") from exc
    if render_timestamp(target, naive=naive) != value:
        hint.setdefault("time", {})[key] = value


def _write_time(
    ts: timestamp_pb2.Timestamp, present: bool, key: str, hint: dict[str, Any], naive: bool
) -> str | None:
    original = (hint.get("time") or {}).get(key)
    if isinstance(original, str) and _spells(original, ts if present else None):
        return original
    return render_timestamp(ts, naive=naive) if present else None


def _spells(text: str, ts: timestamp_pb2.Timestamp | None) -> bool:
    if text == "":
        return ts is None
    if ts is None:
        return False
    try:
        return parse_timestamp(text) == ts
    except (ValueError, OverflowError):
        return False


# ---------------------------------------------------------------------------------------------------
# Typed access with error paths
# ---------------------------------------------------------------------------------------------------


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(path, "must be a JSON object")
    return value


def _set_optional(message: Any, field: str, value: Any) -> None:
    if value is not None:
        setattr(message, field, value)


def _string(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise InvalidArgument(_at(path, key), "must be a string")
    return value


def _string_item(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(path, "must be a string")
    return value


def _opt_string(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(_at(path, key), "must be a string or null")
    return value


def _int(obj: Mapping[str, Any], key: str, path: str, bounds: tuple[int, int]) -> int:
    value = _opt_int(obj, key, path, bounds)
    if value is None and key in obj:
        raise InvalidArgument(_at(path, key), "must be an integer")
    return value or 0


def _opt_int(obj: Mapping[str, Any], key: str, path: str, bounds: tuple[int, int]) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(_at(path, key), "must be an integer or null")
    if not bounds[0] <= value <= bounds[1]:
        raise InvalidArgument(_at(path, key), f"{value} is out of range")
    return value


def _bool(obj: Mapping[str, Any], key: str, path: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(_at(path, key), "must be true or false")
    return value


def _opt_bool(obj: Mapping[str, Any], key: str, path: str) -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument(_at(path, key), "must be true, false or null")
    return value


def _opt_number(obj: Mapping[str, Any], key: str, path: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(_at(path, key), "must be a number or null")
    return float(value)


def _opt_list(obj: Mapping[str, Any], key: str, path: str) -> list[Any] | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, list):
        raise InvalidArgument(_at(path, key), "must be a list or null")
    return value
