"""`TrajectoryRecorder`: Trae's recorder API, saving continuously and crash-safely.

A drop-in for Trae Agent's `TrajectoryRecorder` (same method names, argument names and order, same
JSON shapes for messages, responses, tool calls and results), with Cohort's additions: policy
decisions, outcome, termination reason, token usage and cost, agent and labels.

Saving: each call appends one redacted JSON line to `<trajectory_path>.journal` (see
`cohort.sdk.journal`); `finalize_recording` writes the Trae file atomically and removes the
journal; `recover_journal` turns the journal of a crashed process into a file. Every value passes
through the redactor (`DEFAULT_RULES` unless given) before it is written or sent.

Recording calls are synchronous and cheap (tens of microseconds: one small `write(2)` per event,
no fsync, no network), so they are safe to call from an asyncio agent loop
(`tests/bench/recorder_overhead.py`: about 4-5 % on a 20-step loop whose LLM call is a 2 ms sleep).
`finalize_recording` blocks for a few milliseconds, once per run: it builds the final document
through the `Trajectory` message, fsyncs the journal and writes the file atomically. Sending to the
collector happens later, on the `CollectorSink`'s background task.

Context managers (`with` / `async with`): an exception in the block finalizes with `success=False`
and termination ERROR (TIMEOUT for `TimeoutError`, CANCELLED for `asyncio.CancelledError` and
`KeyboardInterrupt`) with the error text as detail; the exception propagates. Leaving the block
normally without `finalize_recording` finalizes with `success=False` and termination ERROR,
detail "recording context exited without finalize_recording": an agent that never reported a
result is not counted as a success.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import inspect
import json
import logging
import math
import os
import re
import secrets
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk.journal import (
    INTERACTION_REF,
    JOURNAL_FORMAT,
    JournalWriter,
    TrajectoryState,
    build_recorded,
    encode_event,
    finish,
    iso,
    journal_path_for,
    outcome_name,
    termination_name,
    utc_now,
)
from cohort.sdk.sinks import CollectorSink, FileSink
from cohort.sdk.trajectories.usage import PriceTable, fill_usage_and_cost

log = logging.getLogger(__name__)

SinkKind = Literal["file", "collector", "both", "memory"]
DEFAULT_DIRECTORY = Path("trajectories")


# --------------------------------------------------------------------------------------------------
# Normalizing what agents pass (dicts or Trae-like objects) to Trae's JSON shapes


_MISSING = object()


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    value = getattr(obj, name, _MISSING)
    if value is _MISSING:
        return obj.get(name, default) if isinstance(obj, Mapping) else default
    return value


def plain(value: Any) -> Any:
    """A JSON-compatible deep copy: dataclasses, pydantic models, enums and objects become JSON."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    for method in ("model_dump", "to_dict", "dict"):
        dump = getattr(value, method, None)
        if callable(dump):
            try:
                return plain(dump())
            except Exception:  # noqa: BLE001 - fall through to the next representation
                continue
    if hasattr(value, "__dict__"):
        return {k: plain(v) for k, v in vars(value).items() if not k.startswith("_")}
    return str(value)


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, dict) else value
    return plain(value)


def serialize_tool_call(tool_call: Any) -> dict[str, Any]:
    """Trae: `{"call_id", "name", "arguments", "id"}`; OpenAI `{"id", "function": {...}}` is converted."""
    function = _get(tool_call, "function")
    if function is not None and _get(tool_call, "name") is None:
        name, arguments = _get(function, "name"), _arguments(_get(function, "arguments"))
    else:
        name, arguments = _get(tool_call, "name"), _arguments(_get(tool_call, "arguments"))
    call_id = _get(tool_call, "call_id")
    provider_id = _get(tool_call, "id")
    data: dict[str, Any] = {
        "call_id": call_id if call_id is not None else provider_id,
        "name": name,
        "arguments": arguments,
        "id": provider_id,
    }
    if isinstance(tool_call, Mapping):
        for key, value in tool_call.items():
            if key not in data and key not in ("function", "type"):
                data[str(key)] = plain(value)
    return data


def serialize_tool_result(tool_result: Any) -> dict[str, Any]:
    """Trae: `{"call_id", "success", "result", "error", "id"}`."""
    result = _get(tool_result, "result")
    data: dict[str, Any] = {
        "call_id": _get(tool_result, "call_id"),
        "success": bool(_get(tool_result, "success", _get(tool_result, "error") is None)),
        "result": result if result is None or isinstance(result, str) else json.dumps(plain(result)),
        "error": _get(tool_result, "error"),
        "id": _get(tool_result, "id"),
    }
    if isinstance(tool_result, Mapping):
        for key, value in tool_result.items():
            if key not in data:
                data[str(key)] = plain(value)
    return data


def serialize_message(message: Any) -> dict[str, Any]:
    """Trae: `{"role", "content"}` plus `tool_call` / `tool_result` when set (OpenAI keys kept)."""
    data: dict[str, Any] = {"role": _get(message, "role"), "content": plain(_get(message, "content"))}
    tool_call = _get(message, "tool_call")
    if tool_call:
        data["tool_call"] = serialize_tool_call(tool_call)
    tool_result = _get(message, "tool_result")
    if tool_result:
        data["tool_result"] = serialize_tool_result(tool_result)
    tool_calls = _get(message, "tool_calls")
    if tool_calls:
        data["tool_calls"] = [serialize_tool_call(tc) for tc in tool_calls]
    for key in ("tool_call_id", "name"):
        value = _get(message, key)
        if value:
            data[key] = plain(value)
    if isinstance(message, Mapping):
        for key, value in message.items():
            if key not in data and value is not None:
                data[str(key)] = plain(value)
    return data


# OpenAI's usage keys that `serialize_usage` reads into Trae's counts (or drops: the total).
_OPENAI_USAGE_KEYS = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "input_tokens_details",
        "output_tokens_details",
    }
)


def serialize_usage(
    usage: Any, *, absent: Literal["zeros", "null"] = "zeros", null_extras: bool = True
) -> dict[str, Any] | None:
    """Trae: `{"input_tokens", "output_tokens", "cache_creation_input_tokens",
    "cache_read_input_tokens", "reasoning_tokens"}`, from Trae's, Anthropic's or OpenAI's usage.

    `input_tokens` is the uncached input, each count priced at its own rate (Anthropic's meaning).
    OpenAI counts cached tokens within `prompt_tokens` (chat) or `input_tokens` (Responses API) and
    reports them as `*_tokens_details.cached_tokens`; they become `cache_read_input_tokens` and are
    taken out of `input_tokens`, or a cached token would be charged twice (OpenAI's cache writes
    are not split out: they stay in `input_tokens`). Reasoning tokens
    (`completion_tokens_details` / `output_tokens_details`) stay within `output_tokens`, as OpenAI
    counts them. `null_extras=False` leaves out other keys whose value is null.
    """
    if not usage:
        if absent == "null":
            return None
        usage = {"input_tokens": 0, "output_tokens": 0}
    input_tokens = _get(usage, "input_tokens")
    prompt_tokens = _get(usage, "prompt_tokens")
    output_tokens = _get(usage, "output_tokens")
    cache_read = _get(usage, "cache_read_input_tokens")
    input_details = _get(usage, "prompt_tokens_details") or _get(usage, "input_tokens_details")
    output_details = _get(usage, "completion_tokens_details") or _get(usage, "output_tokens_details")
    total_input = input_tokens if input_tokens is not None else prompt_tokens
    cached = _get(input_details, "cached_tokens") if input_details else None
    if cache_read is None and isinstance(cached, int) and not isinstance(cached, bool):
        cache_read = cached
        if isinstance(total_input, int) and not isinstance(total_input, bool):
            total_input = max(0, total_input - cached)
    reasoning = _get(usage, "reasoning_tokens")
    if reasoning is None and output_details:
        reasoning = _get(output_details, "reasoning_tokens")
    data: dict[str, Any] = {
        "input_tokens": total_input,
        "output_tokens": output_tokens if output_tokens is not None else _get(usage, "completion_tokens"),
        "cache_creation_input_tokens": _get(usage, "cache_creation_input_tokens"),
        "cache_read_input_tokens": cache_read,
        "reasoning_tokens": reasoning,
    }
    if isinstance(usage, Mapping):
        for key, value in usage.items():
            if key not in data and key not in _OPENAI_USAGE_KEYS and (null_extras or value is not None):
                data[str(key)] = plain(value)
    return data


def serialize_response(response: Any, *, absent_usage: Literal["zeros", "null"] = "zeros") -> dict[str, Any]:
    """Trae: `{"content", "model", "finish_reason", "usage", "tool_calls"}` (`tool_calls` null if none).

    Also a provider's own response, as its SDK returns it or as `.model_dump()`: see
    `provider_response`.
    """
    shaped = provider_response(response, absent_usage=absent_usage)
    if shaped is not None:
        return shaped
    tool_calls = _get(response, "tool_calls")
    data: dict[str, Any] = {
        "content": plain(_get(response, "content")),
        "model": _get(response, "model"),
        "finish_reason": _get(response, "finish_reason"),
        "usage": serialize_usage(_get(response, "usage"), absent=absent_usage),
        "tool_calls": [serialize_tool_call(tc) for tc in tool_calls] if tool_calls else None,
    }
    if isinstance(response, Mapping):
        for key, value in response.items():
            if key not in data:
                data[str(key)] = plain(value)
    return data


def provider_response(
    response: Any, *, absent_usage: Literal["zeros", "null"] = "zeros"
) -> dict[str, Any] | None:
    """Trae's response shape from an LLM provider's raw response; None when it is not one.

    Read, as the SDK's pydantic objects or as plain dicts (`.model_dump()` or parsed JSON):
    - OpenAI chat completions (`choices`): the first choice's message `content` (text parts joined),
      `tool_calls` and `finish_reason`; a `refusal` is kept as an extra key;
    - OpenAI Responses API (`"object": "response"`): the `output_text` parts of `message` items,
      `function_call` / `custom_tool_call` items as tool calls; finish reason: the
      `incomplete_details.reason` of an incomplete response, else its `status`;
    - Anthropic messages (`content` blocks with `stop_reason`): `text` blocks joined, `tool_use`
      blocks as tool calls (`input` as the arguments), `stop_reason` as the finish reason.
    `model` and `usage` (see `serialize_usage`) from the response. Only what the model produced is
    kept: response ids, reasoning and thinking items and other metadata are not recorded.
    """
    raw = response if isinstance(response, Mapping) else _model_dump(response)
    if raw is None:
        return None
    choices = raw.get("choices")
    if isinstance(choices, list | tuple) and choices and "content" not in raw:
        data = _openai_chat_response(raw, choices[0])
    elif raw.get("object") == "response" and isinstance(raw.get("output"), list | tuple):
        data = _openai_responses_response(raw)
    elif isinstance(raw.get("content"), list | tuple) and (
        raw.get("type") == "message" or "stop_reason" in raw
    ):
        data = _anthropic_response(raw)
    else:
        return None
    content, model, finish_reason, calls, extras = data
    return {
        "content": content,
        "model": model,
        "finish_reason": finish_reason,
        "usage": serialize_usage(raw.get("usage"), absent=absent_usage, null_extras=False),
        "tool_calls": calls or None,
        **extras,
    }


def _model_dump(value: Any) -> Mapping[str, Any] | None:
    """A pydantic model (the OpenAI and Anthropic SDK types) as the dict `.model_dump()` gives."""
    dump = getattr(type(value), "model_dump", None)
    if not callable(dump):
        return None
    try:
        dumped = value.model_dump()
    except Exception:  # noqa: BLE001 - not a model after all: the generic reading applies
        return None
    return dumped if isinstance(dumped, Mapping) else None


def _text_of(content: Any) -> str | None:
    """A message content as text: a string as is, the text of a list of parts joined."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        texts = [part.get("text") for part in content if isinstance(part, Mapping)]
        return "".join(text for text in texts if isinstance(text, str))
    return str(content)


_Parts = tuple[str | None, Any, Any, list[dict[str, Any]], dict[str, Any]]
"""content, model, finish reason, tool calls, extra keys."""


def _openai_chat_response(raw: Mapping[str, Any], choice: Any) -> _Parts:
    choice = choice if isinstance(choice, Mapping) else {}
    message = choice.get("message") if isinstance(choice.get("message"), Mapping) else {}
    calls = [serialize_tool_call(call) for call in message.get("tool_calls") or ()]
    extras = {key: plain(message[key]) for key in ("refusal", "function_call") if message.get(key)}
    return _text_of(message.get("content")), raw.get("model"), choice.get("finish_reason"), calls, extras


def _openai_responses_response(raw: Mapping[str, Any]) -> _Parts:
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in raw["output"]:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if not isinstance(part, Mapping):
                    continue
                if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                    refusals.append(part["refusal"])
        elif kind in ("function_call", "custom_tool_call"):
            arguments = item.get("arguments") if kind == "function_call" else item.get("input")
            calls.append(
                {
                    "call_id": item.get("call_id"),
                    "name": item.get("name"),
                    "arguments": _arguments(arguments) if arguments is not None else {},
                    "id": item.get("id"),
                }
            )
    incomplete = raw.get("incomplete_details")
    reason = incomplete.get("reason") if isinstance(incomplete, Mapping) else None
    finish_reason = reason if raw.get("status") == "incomplete" and reason else raw.get("status")
    extras = {"refusal": "".join(refusals)} if refusals else {}
    return "".join(texts) if texts else None, raw.get("model"), finish_reason, calls, extras


def _anthropic_response(raw: Mapping[str, Any]) -> _Parts:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in raw["content"]:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            arguments = block.get("input")
            calls.append(
                {
                    "call_id": block.get("id"),
                    "name": block.get("name"),
                    "arguments": plain(arguments) if arguments is not None else {},
                    "id": block.get("id"),
                }
            )
    return "".join(texts) if texts else None, raw.get("model"), raw.get("stop_reason"), calls, {}


def tool_name(tool: Any) -> str:
    if isinstance(tool, str):
        return tool
    name = _get(tool, "name")
    if name is None:
        function = _get(tool, "function")
        name = _get(function, "name") if function is not None else None
    if name is None and callable(getattr(tool, "get_name", None)):
        name = tool.get_name()
    return str(name)


# --------------------------------------------------------------------------------------------------
# The recorder


def default_trajectory_path(directory: str | os.PathLike[str] = DEFAULT_DIRECTORY) -> Path:
    """`<directory>/trajectory_YYYYMMDD_HHMMSS.json` (UTC), with a short suffix if that is taken."""
    directory = Path(directory)
    stem = f"trajectory_{utc_now():%Y%m%d_%H%M%S}"
    path = directory / f"{stem}.json"
    while path.exists() or journal_path_for(path).exists():
        path = directory / f"{stem}_{secrets.token_hex(3)}.json"
    return path


class _Redact:
    """The redactor in use (`DEFAULT_RULES` by default), with a fast path for clean events.

    Most events hold no secret, and most of their strings were already seen (Trae agents pass the
    same messages and response to `record_llm_interaction` and `record_agent_step`). When every
    rule of the redactor names literal `triggers` (the built-in rules do), a string that contains
    none of them cannot be changed by the redactor, so an event whose strings are all known clean
    or trigger-free is written as is (clean strings are remembered, a bounded set); any other event
    is redacted whole with `redact_json_value`.
    """

    CACHE_LIMIT = 4096

    def __init__(self, redactor: Any) -> None:
        if redactor is None:
            from cohort.sdk.trajectories.redaction import Redactor

            redactor = Redactor()
        self.redactor = redactor
        rules = getattr(redactor, "rules", None)
        self.triggers: re.Pattern[str] | None = None
        if rules is not None and all(getattr(rule, "triggers", None) for rule in rules):
            triggers = sorted({t for rule in rules for t in rule.triggers}, key=lambda t: (-len(t), t))
            self.triggers = re.compile("|".join(map(re.escape, triggers)))
        self._clean: dict[str, None] = {}

    def __call__(self, value: Any) -> Any:
        return self.redactor.redact_json_value(value)

    def is_clean(self, value: Any) -> bool:
        """True when no string in `value` can hold a secret (False: the redactor must look)."""
        if self.triggers is None:
            return False
        search, clean = self.triggers.search, self._clean
        stack = [value]
        while stack:
            item = stack.pop()
            kind = type(item)
            if kind is str:
                if item in clean:
                    continue
                if search(item) is not None:
                    return False
                if len(clean) >= self.CACHE_LIMIT:
                    clean.clear()
                clean[item] = None
            elif kind is dict:
                stack.extend(item.values())
            elif kind is list or kind is tuple:
                stack.extend(item)
            elif item is not None and kind not in (int, float, bool):
                return False  # something unusual: let the redactor decide
        return True

    def event(self, event: str, moment: datetime, data: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
        """The journal line of an event and its data, both redacted."""
        if not self.is_clean(data):
            data = self.redactor.redact_json_value(data)
        return encode_event(event, moment, data), data


class TrajectoryRecorder:
    """Records one agent run: Trae's recorder methods plus decisions, outcome and termination.

    `sink`: `"file"` writes the Trae file at `trajectory_path`; `"collector"` sends the finished
    trajectory with `collector` (a `CollectorSink`) and deletes the local file once the collector
    stored it (it stays when sending fails); `"both"` keeps the file and sends. The journal is
    written in these three modes. `"memory"` writes nothing: no journal, no file, nothing sent;
    `finalize_recording` only builds `.trajectory` (for a caller that stores it itself, like the
    collector recording its in-process rollouts, where a journal per rollout would cost more than
    the rollout). `fsync="event"` fsyncs the journal after every event (durable against
    power loss, measured far slower); the default `"finalize"` fsyncs once at the end.
    `redact=False` (memory mode only) keeps events as recorded, for a caller that redacts the finished
    trajectory itself before it goes anywhere.
    """

    def __init__(
        self,
        trajectory_path: str | os.PathLike[str] | None = None,
        *,
        sink: SinkKind = "file",
        collector: CollectorSink | None = None,
        redactor: Any = None,
        prices: Any = None,
        agent_name: str = "",
        agent_version: str = "",
        labels: Mapping[str, str] | None = None,
        trajectory_id: str | None = None,
        job_id: str = "",
        group_id: str = "",
        iteration: int = 0,
        query_id: str = "",
        fsync: Literal["finalize", "event"] = "finalize",
        redact: bool = True,
    ) -> None:
        if sink not in ("file", "collector", "both", "memory"):
            raise InvalidArgument("sink", f"must be 'file', 'collector', 'both' or 'memory', not {sink!r}")
        if sink in ("collector", "both") and collector is None:
            raise InvalidArgument("collector", f"sink={sink!r} needs a CollectorSink")
        if fsync not in ("finalize", "event"):
            raise InvalidArgument("fsync", f"must be 'finalize' or 'event', not {fsync!r}")
        if not redact and sink != "memory":
            raise InvalidArgument("redact", "only a memory recording (nothing written or sent) may skip it")
        if trajectory_path is not None:
            self.trajectory_path: Path = Path(trajectory_path)
        elif sink == "memory":
            self.trajectory_path = Path(f"memory-{trajectory_id or 'trajectory'}.json")  # never written
        else:
            self.trajectory_path = default_trajectory_path()
        self.journal_path: Path = journal_path_for(self.trajectory_path)
        self.sink: SinkKind = sink
        self.collector = collector
        self.prices = prices
        self.fsync = fsync
        # Memory-mode recorders are made per rollout by the thousand: they share the default redactor
        # (and its cache of strings known clean) instead of building one each.
        self._redact = _shared_redact() if redactor is None and sink == "memory" else _Redact(redactor)
        self._file_sink = FileSink()
        self._lock = threading.RLock()
        self._journal: JournalWriter | None = None
        self._journal_failed = sink == "memory"  # memory mode: never open a journal
        self._state = TrajectoryState()
        self._identity = {
            "trajectory_id": trajectory_id or str(uuid.uuid4()),
            "agent": {"name": agent_name, "version": agent_version},
            "labels": {str(k): str(v) for k, v in (labels or {}).items()},
            "job_id": job_id,
            "group_id": group_id,
            "iteration": int(iteration),
            "query_id": query_id,
        }
        # redact=False: the caller redacts the finished trajectory before it goes anywhere (the
        # collector's store redacts everything it stores), so redacting each event is work done twice.
        self._redact_events = redact
        self._state.cohort.update(self._redact(self._identity) if redact else self._identity)
        self._last_call: tuple[list[Any], Any, int] = ([], _MISSING, -1)
        self.started = False
        self.finalized = False
        self.final_path: Path | None = None
        self.trajectory: trajectory_pb2.Trajectory | None = None
        """The finished `Trajectory` message, after `finalize_recording`."""

    # -- Trae's API -----------------------------------------------------------------------------

    @property
    def trajectory_data(self) -> dict[str, Any]:
        """The Trae document so far (Trae's attribute name)."""
        return self._state.trae

    @property
    def trajectory_id(self) -> str:
        trajectory_id: str = self._state.cohort["trajectory_id"]
        return trajectory_id

    def get_trajectory_path(self) -> str:
        return str(self.trajectory_path)

    def start_recording(self, task: str, provider: str, model: str, max_steps: int | None) -> None:
        moment = utc_now()
        data = {
            "task": task,
            "start_time": iso(moment),
            "provider": provider,
            "model": model,
            "max_steps": max_steps,
        }
        self._emit("start", moment, data)
        self._last_call = ([], _MISSING, -1)
        self.started = True

    def record_llm_interaction(
        self,
        messages: Iterable[Any],
        response: Any,
        provider: str,
        model: str,
        tools: Iterable[Any] | None = None,
    ) -> None:
        moment = utc_now()
        tools = list(tools) if tools else None
        messages = list(messages) if messages else []
        input_messages = [serialize_message(m) for m in messages]
        serialized_response = serialize_response(response)
        data = {
            "timestamp": iso(moment),
            "provider": provider,
            "model": model,
            "input_messages": input_messages,
            "response": serialized_response,
            "tools_available": [tool_name(t) for t in tools] if tools else None,
        }
        self._emit("llm_interaction", moment, data)
        # Trae agents pass the very same messages and response to `record_agent_step`; the step's
        # journal line then refers to this interaction instead of repeating them.
        index = len(self._state.trae["llm_interactions"]) - 1
        self._last_call = (messages, response, index)

    def record_agent_step(
        self,
        step_number: int,
        state: Any,
        llm_messages: Iterable[Any] | None = None,
        llm_response: Any = None,
        tool_calls: Iterable[Any] | None = None,
        tool_results: Iterable[Any] | None = None,
        reflection: str | None = None,
        error: str | None = None,
    ) -> None:
        moment = utc_now()
        llm_messages = list(llm_messages) if llm_messages else None
        tool_calls = list(tool_calls) if tool_calls else None
        tool_results = list(tool_results) if tool_results else None
        last_messages, last_response, index = self._last_call
        if not llm_messages:
            step_messages: Any = None
        elif index >= 0 and _same_items(llm_messages, last_messages):
            step_messages = {INTERACTION_REF: index}
        else:
            step_messages = [serialize_message(m) for m in llm_messages]
        if not llm_response:
            step_response: Any = None
        elif index >= 0 and llm_response is last_response:
            step_response = {INTERACTION_REF: index}
        else:
            step_response = serialize_response(llm_response)
        data = {
            "step_number": step_number,
            "timestamp": iso(moment),
            "state": plain(getattr(state, "value", state)),
            "llm_messages": step_messages,
            "llm_response": step_response,
            "tool_calls": [serialize_tool_call(tc) for tc in tool_calls] if tool_calls else None,
            "tool_results": [serialize_tool_result(tr) for tr in tool_results] if tool_results else None,
            "reflection": reflection,
            "error": error,
        }
        self._emit("step", moment, data)

    def save_trajectory(self) -> None:
        """Trae's explicit save: nothing to do, every event is already in the journal."""

    def finalize_recording(self, success: bool, final_result: str | None = None) -> Path | None:
        """Ends the recording: writes the final file atomically, removes the journal, sends.

        Returns the final file, or None when it could not be written (the journal is then kept, with
        the finalize event, for `recover_journal`) or when the mode is collector-only and the spool
        file could not be written. A second call is ignored.
        """
        with self._lock:
            if self.finalized:
                log.warning("%s: finalize_recording called twice; ignored", self.trajectory_path)
                return self.final_path
            moment = utc_now()
            started = self._state.started_at
            data = {
                "success": bool(success),
                "final_result": final_result if final_result is None else str(final_result),
                "end_time": iso(moment),
                "execution_time": (moment - started).total_seconds() if started else 0.0,
            }
            self._emit("finalize", moment, data)
            self.finalized = True
            if self.sink == "memory":
                self._finish_in_memory()
                return None
            journal = self._journal
            try:
                if journal is not None:
                    journal.sync()
                document, trajectory = finish(self._state, redactor=self._redact.redactor, prices=self.prices)
            except Exception:
                log.exception("%s: could not build the final trajectory; journal kept", self.trajectory_path)
                if journal is not None:
                    journal.close()
                return None
            self.trajectory = trajectory
            try:
                self.final_path = self._file_sink.write(self.trajectory_path, document)
            except OSError:
                log.exception(
                    "%s: could not write the final file; the journal %s is kept for recovery",
                    self.trajectory_path,
                    self.journal_path,
                )
                if journal is not None:
                    journal.close()
            else:
                if journal is not None:
                    journal.remove()
            if self.sink != "file" and self.collector is not None:
                self.collector.submit(
                    trajectory, local_path=self.final_path, delete_local_on_success=self.sink == "collector"
                )
            return self.final_path

    def _finish_in_memory(self) -> None:
        """Memory mode: the `Trajectory` message only (no Trae document, no file); None returned."""
        try:
            # Every event and the identity were redacted as they were recorded: no second pass here.
            trajectory = build_recorded(self._state.trae, self._state.cohort)
            fill_usage_and_cost(trajectory, self.prices if self.prices is not None else _default_prices())
        except Exception:
            log.exception("%s: could not build the final trajectory", self.trajectory_path)
            return None
        self.trajectory = trajectory
        return None

    # -- Cohort's additions ---------------------------------------------------------------------

    def record_decision(
        self,
        head: str,
        options: Iterable[str],
        chosen_index: int,
        log_prob: float,
        *,
        features: Mapping[str, float] | None = None,
        probabilities: Iterable[float] | None = None,
        option_features: Iterable[Mapping[str, float]] | None = None,
        policy_id: str = "",
        policy_version: int = 0,
        step_number: int = 0,
        greedy: bool = False,
        exploration: float = 0.0,
    ) -> None:
        """Records a policy decision. `step_number=0` means the step in progress (last recorded + 1).
        `exploration`: the ε the decision was sampled with (`log_prob` and `probabilities` are then
        those of the mixture it was drawn from)."""
        options = [str(o) for o in options]
        if not head:
            raise InvalidArgument("head", "must not be empty")
        if not options:
            raise InvalidArgument("options", "must not be empty")
        if isinstance(chosen_index, bool) or not 0 <= int(chosen_index) < len(options):
            raise InvalidArgument("chosen_index", f"{chosen_index} is not an index of {len(options)} options")
        log_prob = float(log_prob)
        if not math.isfinite(log_prob) or log_prob > 1e-9:
            raise InvalidArgument("log_prob", f"must be a finite log-probability (<= 0), not {log_prob}")
        probs = [float(p) for p in probabilities] if probabilities is not None else []
        if probs and (len(probs) != len(options) or any(not 0.0 <= p <= 1.0 for p in probs)):
            raise InvalidArgument("probabilities", "must be one probability in [0, 1] per option")
        feats = _features("features", features)
        try:
            exploration = float(exploration)
        except (TypeError, ValueError):
            raise InvalidArgument("exploration", f"must be a number in [0, 1), not {exploration!r}") from None
        if not 0.0 <= exploration < 1.0:  # NaN fails too
            raise InvalidArgument("exploration", f"must be in [0, 1), not {exploration}")
        per_option = [_features("option_features", f) for f in option_features or ()]
        if per_option and len(per_option) != len(options):
            raise InvalidArgument("option_features", "must have one feature map per option")
        if not step_number:
            steps = self._state.trae["agent_steps"]
            step_number = (steps[-1].get("step_number") or len(steps)) + 1 if steps else 1
        moment = utc_now()
        data: dict[str, Any] = {
            "head": head,
            "options": options,
            "chosen_index": int(chosen_index),
            "chosen": options[int(chosen_index)],
            "log_prob": log_prob,
            "probabilities": probs,
            "features": feats,
            "policy": {"policy_id": policy_id, "version": int(policy_version)},
            "step_number": int(step_number),
            "timestamp": iso(moment),
            "greedy": bool(greedy),
        }
        if per_option:
            data["option_features"] = [{"values": f} for f in per_option]
        if exploration:  # absent when 0: recordings without exploration keep their exact shape
            data["exploration"] = exploration
        self._emit("decision", moment, data)

    def set_outcome(
        self,
        kind: str | int,
        score: float | None = None,
        reasons: Iterable[str] = (),
        *,
        confidence: float = 1.0,
        inferred: bool = False,
    ) -> None:
        """The run's outcome: kind `success` / `partial` / `failure`, optional score in [0, 1]."""
        if score is not None and not 0.0 <= float(score) <= 1.0:
            raise InvalidArgument("score", f"must be in [0, 1], not {score}")
        if not 0.0 <= float(confidence) <= 1.0:
            raise InvalidArgument("confidence", f"must be in [0, 1], not {confidence}")
        data = {
            "kind": outcome_name(kind),
            "score": None if score is None else float(score),
            "confidence": float(confidence),
            "reasons": [str(r) for r in reasons],
            "inferred": bool(inferred),
        }
        self._emit("outcome", utc_now(), data)

    def set_termination(self, reason: str | int, detail: str = "") -> None:
        """How the run ended: completed, max_steps, timeout, error, cancelled, budget_exhausted, ...

        Unset at finalize it defaults to COMPLETED, or MAX_STEPS for a failed run that used every step.
        """
        self._emit("termination", utc_now(), {"reason": termination_name(reason), "detail": str(detail)})

    # -- collector ----------------------------------------------------------------------------

    async def aflush(self) -> None:
        """Waits until the collector sink has sent what it holds (no-op for the file sink)."""
        if self.collector is not None:
            await self.collector.aflush()

    async def aclose(self) -> None:
        """Finalizes (as a context exit would) if not done, then flushes the collector sink."""
        if not self.finalized:
            self._finish_failed(None)
        await self.aflush()

    # -- context managers -----------------------------------------------------------------------

    def __enter__(self) -> TrajectoryRecorder:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if not self.finalized:
            self._finish_failed(exc)

    async def __aenter__(self) -> TrajectoryRecorder:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if not self.finalized:
            self._finish_failed(exc)

    def _finish_failed(self, exc: BaseException | None) -> None:
        """Finalizes with success=False and a termination derived from `exc` (None: never finalized)."""
        try:
            if not self._state.termination_set:
                if exc is None:
                    self.set_termination("error", "recording context exited without finalize_recording")
                else:
                    self.set_termination(termination_for(exc), describe(exc))
            self.finalize_recording(False)
        except Exception:  # never mask the agent's own exception
            log.exception("%s: could not finalize the recording", self.trajectory_path)

    # -- internals ------------------------------------------------------------------------------

    def _emit(self, event: str, moment: datetime, data: Mapping[str, Any]) -> None:
        with self._lock:
            if self.finalized:
                log.warning("%s: %s recorded after finalize_recording; ignored", self.trajectory_path, event)
                return
            if self.sink == "memory":  # no journal line to encode: redact only
                if self._redact_events and not self._redact.is_clean(data):
                    data = self._redact(data)
                self._state.apply(event, moment, data)
                return
            line, data = self._redact.event(event, moment, data)
            if not self._journal_failed:
                try:
                    if self._journal is None:
                        self._open_journal(moment)
                    assert self._journal is not None
                    self._journal.write_line(line)
                except OSError:
                    self._journal_failed = True
                    log.exception(
                        "%s: journal write failed; recording continues in memory only", self.journal_path
                    )
            self._state.apply(event, moment, data)

    def _open_journal(self, moment: datetime) -> None:
        journal = JournalWriter(self.journal_path, fsync_each=self.fsync == "event")
        cohort = self._state.cohort
        identity = {"format": JOURNAL_FORMAT, **{key: cohort[key] for key in self._identity}}
        try:
            journal.append("open", moment, identity)
        except BaseException:
            journal.close()
            raise
        self._journal = journal


@functools.cache
def _shared_redact() -> _Redact:
    return _Redact(None)


@functools.cache
def _default_prices() -> PriceTable:
    return PriceTable.load(None)


def _same_items(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _features(name: str, features: Mapping[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (features or {}).items():
        number = float(value)
        if not math.isfinite(number):
            raise InvalidArgument(name, f"feature {key!r} is not finite")
        out[str(key)] = number
    return out


def termination_for(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        return "cancelled"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "error"


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------
# One-line instrumentation of an async agent


def _interpret(result: Any) -> tuple[bool, str | None]:
    """(success, final_result) from what an agent returned: a bool, a dict, or an object."""

    def text(value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        return json.dumps(plain(value), ensure_ascii=False)

    if isinstance(result, bool):
        return result, None
    if isinstance(result, Mapping):
        final = result.get("final_result", result.get("result"))
        return bool(result.get("success", True)), text(final)
    if hasattr(result, "success"):
        final = getattr(result, "final_result", getattr(result, "result", None))
        return bool(result.success), text(final)
    return True, text(result)


def record_agent(
    func: Callable[..., Awaitable[Any]] | None = None,
    *,
    provider: str = "",
    model: str = "",
    max_steps: int | None = None,
    trajectory_path: str | os.PathLike[str] | Callable[[str], str | os.PathLike[str]] | None = None,
    trajectory_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    **recorder_kwargs: Any,
) -> Any:
    """Records every call of an async agent: `@record_agent` or `@record_agent(provider=..., ...)`.

    The agent is `async def agent(task, recorder, ...)` or `async def agent(task, context, ...)`
    where `context.recorder` is set. A recorder passed by the caller (`recorder=` or a context whose
    `.recorder` is set) is used; otherwise one is made per call (`trajectory_path`, a path or
    `task -> path`; else a fresh `trajectory_<time>.json` in `trajectory_dir` or `trajectories/`;
    `recorder_kwargs` go to `TrajectoryRecorder`). The wrapper starts the recording with the task
    (unless already started), awaits the agent (under `timeout` seconds if given) and finalizes with
    what it returned (a bool; a dict or object with `success` and `final_result`/`result`; anything
    else counts as success with itself as the result) unless the agent finalized itself. An
    exception finalizes with success=False and termination ERROR, `TimeoutError` TIMEOUT,
    `asyncio.CancelledError` CANCELLED; the exception is re-raised. Returns the agent's result.
    """

    def decorate(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        signature = inspect.signature(fn)
        if "recorder" in signature.parameters:
            mode = "recorder"
        elif "context" in signature.parameters:
            mode = "context"
        else:
            raise TypeError(f"{fn.__qualname__} takes neither a `recorder` nor a `context` parameter")

        def new_recorder(task: str) -> TrajectoryRecorder:
            if callable(trajectory_path):
                path = trajectory_path(task)
            elif trajectory_path is not None:
                path = trajectory_path
            else:
                path = default_trajectory_path(trajectory_dir or DEFAULT_DIRECTORY)
            return TrajectoryRecorder(path, **recorder_kwargs)

        @functools.wraps(fn)
        async def wrapper(task: str, *args: Any, **kwargs: Any) -> Any:
            if mode == "recorder":
                bound = signature.bind_partial(task, *args, **kwargs)
                recorder = bound.arguments.get("recorder")
                if recorder is None:
                    recorder = new_recorder(task)
                    kwargs["recorder"] = recorder
            else:
                bound = signature.bind_partial(task, *args, **kwargs)
                context = bound.arguments.get("context")
                if context is None:
                    raise TypeError(f"{fn.__qualname__}() needs a `context` argument")
                recorder = getattr(context, "recorder", None)
                if recorder is None:
                    recorder = new_recorder(task)
                    context.recorder = recorder
            if not recorder.started:
                recorder.start_recording(task, provider, model, max_steps)
            try:
                if timeout is not None:
                    async with asyncio.timeout(timeout):
                        result = await fn(task, *args, **kwargs)
                else:
                    result = await fn(task, *args, **kwargs)
            except BaseException as exc:
                if not recorder.finalized:
                    recorder._finish_failed(exc)
                raise
            if not recorder.finalized:
                success, final_result = _interpret(result)
                recorder.finalize_recording(success, final_result)
            return result

        return wrapper

    return decorate(func) if func is not None else decorate
