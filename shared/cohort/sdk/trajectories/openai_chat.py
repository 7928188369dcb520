"""OpenAI chat fine-tuning records (`{"messages": [...], "tools": [...]}`) from trajectories.

The conversation is the one the model last saw: the input messages of the last LLM interaction
followed by its response (an assistant message, with its tool calls), when each interaction's input
holds the whole history (OpenAI style: the last input starts with the first one's messages). Trae's
recorder logs only the messages new to each call, so otherwise every interaction's input and
response are concatenated in call order. A trajectory without interactions is rebuilt from its
steps instead: the task as the user message, then per step the
assistant's response (content and tool calls) and a `tool` message per tool result, and the final
result as the closing assistant message when the steps did not end with assistant text.

Trae stores an assistant's tool call as a message with `tool_call` and a tool's answer as a message
with `tool_result`; they become an assistant `tool_calls` entry (consecutive calls merged into one
assistant message) and a `tool` message. Calls without an id get `call_<n>`. A tool result that
answers no call in the conversation (its call was cut from the input) is dropped, since OpenAI
rejects a `tool` message without its call. `tools` lists every tool offered (`tools_available`) or
called, with an open `{"type": "object"}` parameter schema, since trajectories do not carry schemas.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk.trajectories.jsonl import json_line

ROLES = ("system", "user", "assistant", "tool")
_ROLE_ALIASES = {"developer": "system", "function": "tool", "model": "assistant", "human": "user"}
_RECORD_KEYS = ("messages", "tools", "parallel_tool_calls")


def trajectory_to_openai_chat(trajectory: trajectory_pb2.Trajectory) -> dict[str, Any]:
    """One fine-tuning record for a trajectory (see the module docstring for how it is built)."""
    builder = _Conversation(_step_results(trajectory))
    interactions = trajectory.llm_interactions
    if interactions:
        for interaction in interactions[-1:] if _inputs_hold_history(interactions) else interactions:
            for message in interaction.input_messages:
                builder.add_message(message)
            if interaction.HasField("response"):
                builder.add_assistant(_text(interaction.response.content), interaction.response.tool_calls)
    else:
        _add_steps(builder, trajectory)
    return {"messages": builder.messages, "tools": _tools(trajectory, builder.tool_names)}


def trajectory_to_openai_chat_line(trajectory: trajectory_pb2.Trajectory) -> str:
    """The fine-tuning record of a trajectory as one JSONL line, without the newline."""
    return json_line(trajectory_to_openai_chat(trajectory))


def _step_results(trajectory: trajectory_pb2.Trajectory) -> dict[str, trajectory_pb2.ToolResult]:
    return {result.call_id: result for step in trajectory.agent_steps for result in step.tool_results}


def _inputs_hold_history(interactions: Sequence[trajectory_pb2.LlmInteraction]) -> bool:
    first, last = interactions[0].input_messages, interactions[-1].input_messages
    return len(last) >= len(first) and all(a == b for a, b in zip(first, last, strict=False))


def _add_steps(builder: _Conversation, trajectory: trajectory_pb2.Trajectory) -> None:
    if trajectory.task:
        builder.add("user", trajectory.task)
    for step in trajectory.agent_steps:
        response = step.llm_response
        calls = list(response.tool_calls) or list(step.tool_calls)
        content = _text(response.content) if step.HasField("llm_response") else None
        if content or calls:
            builder.add_assistant(content, calls)
        for result in step.tool_results:
            builder.add_tool_result(result)
    last = builder.messages[-1] if builder.messages else None
    ended_with_answer = last is not None and last["role"] == "assistant" and last.get("content")
    if trajectory.HasField("final_result") and trajectory.final_result and not ended_with_answer:
        builder.add("assistant", trajectory.final_result)


def _tools(trajectory: trajectory_pb2.Trajectory, called: Iterable[str]) -> list[dict[str, Any]]:
    names: dict[str, None] = {}
    for interaction in trajectory.llm_interactions:
        names.update(dict.fromkeys(interaction.tools_available))
    names.update(dict.fromkeys(called))
    return [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        for name in names
        if name
    ]


def _text(value: str | None) -> str | None:
    return value if value else None


class _Conversation:
    """Accumulates OpenAI messages, keeping call ids consistent between calls and results."""

    def __init__(self, step_results: Mapping[str, trajectory_pb2.ToolResult] | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        # Results recorded in the steps, for calls whose answer the next LLM input does not carry.
        self._step_results = step_results or {}
        self._unanswered: list[str] = []
        self.tool_names: dict[str, None] = {}
        self._ids: dict[str, str] = {}
        self._generated = 0

    def add(self, role: str, content: Any) -> None:
        self._answer_pending_calls()
        self.messages.append({"role": role, "content": content})

    def _answer_pending_calls(self) -> None:
        pending, self._unanswered = self._unanswered, []
        for call_id in pending:
            if call_id in self._step_results:
                self.add_tool_result(self._step_results[call_id])

    def add_message(self, message: trajectory_pb2.Message) -> None:
        if message.HasField("tool_result"):
            self.add_tool_result(message.tool_result)
            return
        role = _ROLE_ALIASES.get(message.role, message.role)
        content = _content(message)
        if role == "tool" or message.tool_call_id:
            self._add_tool_message(message.tool_call_id, content if content is not None else "")
            return
        calls = list(message.tool_calls)
        if message.HasField("tool_call"):
            calls.append(message.tool_call)
        if role == "assistant":
            self.add_assistant(content, calls)
        else:
            self.add(role if role in ROLES else "user", content if content is not None else "")

    def add_assistant(self, content: Any, calls: Iterable[trajectory_pb2.ToolCall]) -> None:
        converted = [self._call(call) for call in calls]
        previous = self.messages[-1] if self.messages else None
        if (
            converted
            and not content
            and previous
            and previous["role"] == "assistant"
            and previous.get("tool_calls")
        ):
            # Trae records parallel calls as one message each; OpenAI wants them in one message.
            previous["tool_calls"].extend(converted)
            self._unanswered.extend(c["id"] for c in converted)
            return
        self._answer_pending_calls()
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content if content or not converted else None,
        }
        if content is None and not converted:
            message["content"] = ""
        if converted:
            message["tool_calls"] = converted
        self.messages.append(message)
        self._unanswered = [c["id"] for c in converted]

    def add_tool_result(self, result: trajectory_pb2.ToolResult) -> None:
        text = result.result if result.HasField("result") else ""
        if not result.success and result.HasField("error") and result.error:
            text = f"{text}\n{result.error}".strip() if text else result.error
        self._add_tool_message(result.call_id or result.id, text)

    def _add_tool_message(self, call_id: str, content: Any) -> None:
        mapped = self._ids.get(call_id)
        if mapped is None:
            return  # answers a call the conversation does not hold; OpenAI would reject it
        if mapped in self._unanswered:
            self._unanswered.remove(mapped)
        self.messages.append({"role": "tool", "tool_call_id": mapped, "content": content})

    def _call(self, call: trajectory_pb2.ToolCall) -> dict[str, Any]:
        original = call.call_id or (call.id if call.HasField("id") else "")
        if original:
            call_id = self._ids.setdefault(original, original)
        else:
            self._generated += 1
            call_id = f"call_{self._generated}"
        self.tool_names[call.name] = None
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json or "{}"},
        }


def _content(message: trajectory_pb2.Message) -> Any:
    if message.content_json:
        try:
            parts = json.loads(message.content_json)
        except ValueError:
            return message.content_json
        if isinstance(parts, list) and all(isinstance(p, Mapping) and "type" in p for p in parts):
            return parts
        return message.content_json
    return message.content if message.HasField("content") else None


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------


def validate_openai_chat_record(record: Any) -> None:
    """Check a fine-tuning record's shape; raises `InvalidArgument` naming the offending field."""
    if not isinstance(record, Mapping):
        raise InvalidArgument("record", "must be a JSON object")
    for key in record:
        if key not in _RECORD_KEYS:
            raise InvalidArgument(key, f"unknown key; expected {list(_RECORD_KEYS)}")
    tool_names = _validate_tools(record.get("tools"))
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidArgument("messages", "must be a non-empty list")
    open_calls: set[str] = set()
    assistants = 0
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidArgument(path, "must be a JSON object")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidArgument(f"{path}.role", f"must be one of {list(ROLES)}")
        if role == "assistant":
            assistants += 1
            open_calls |= _validate_assistant(message, path, tool_names)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in open_calls:
                raise InvalidArgument(f"{path}.tool_call_id", "must answer a tool call of an earlier message")
            _validate_content(message, path, allow_null=False)
        else:
            _validate_content(message, path, allow_null=False)
    if not assistants:
        raise InvalidArgument("messages", "must hold at least one assistant message")


def _validate_tools(tools: Any) -> set[str] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidArgument("tools", "must be a list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            raise InvalidArgument(f"{path}.type", 'must be "function"')
        function = tool.get("function")
        if not isinstance(function, Mapping):
            raise InvalidArgument(f"{path}.function", "must be a JSON object")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"{path}.function.name", "must be a non-empty string")
        parameters = function.get("parameters", {"type": "object"})
        if not isinstance(parameters, Mapping) or parameters.get("type") != "object":
            raise InvalidArgument(f"{path}.function.parameters", 'must be a JSON schema of "type": "object"')
        names.add(name)
    return names


def _validate_assistant(message: Mapping[str, Any], path: str, tool_names: set[str] | None) -> set[str]:
    calls = message.get("tool_calls")
    _validate_content(message, path, allow_null=bool(calls))
    if calls is None:
        return set()
    if not isinstance(calls, list) or not calls:
        raise InvalidArgument(f"{path}.tool_calls", "must be a non-empty list when present")
    ids: set[str] = set()
    for j, call in enumerate(calls):
        call_path = f"{path}.tool_calls[{j}]"
        if not isinstance(call, Mapping):
            raise InvalidArgument(call_path, "must be a JSON object")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise InvalidArgument(f"{call_path}.id", "must be a non-empty string")
        if call.get("type") != "function":
            raise InvalidArgument(f"{call_path}.type", 'must be "function"')
        function = call.get("function")
        if not isinstance(function, Mapping):
            raise InvalidArgument(f"{call_path}.function", "must be a JSON object")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"{call_path}.function.name", "must be a non-empty string")
        if tool_names is not None and name not in tool_names:
            raise InvalidArgument(f"{call_path}.function.name", f"{name!r} is not among the record's tools")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            raise InvalidArgument(f"{call_path}.function.arguments", "must be a JSON text string")
        try:
            json.loads(arguments)
        except ValueError as exc:
            raise InvalidArgument(f"{call_path}.function.arguments", f"is not valid JSON: {exc}") from exc
        ids.add(call["id"])
    return ids


def _validate_content(message: Mapping[str, Any], path: str, *, allow_null: bool) -> None:
    content = message.get("content")
    if content is None:
        if not allow_null:
            raise InvalidArgument(f"{path}.content", "must be a string or a list of content parts")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidArgument(f"{path}.content", "must be a string or a list of content parts")
    for k, part in enumerate(content):
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise InvalidArgument(f"{path}.content[{k}].type", "every content part needs a string type")
