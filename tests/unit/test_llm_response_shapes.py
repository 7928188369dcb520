"""`record_llm_interaction` with the raw responses of the OpenAI and Anthropic SDKs.

Built with the SDKs' own response models (`model_validate`, no network), and as the plain dicts
`.model_dump()` and the wire JSON give: all three must record the same trajectory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.sdk import TrajectoryRecorder
from cohort.sdk.trajectories.trae import load_trae_file

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]
TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]

CHAT_TOOL_CALL = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "logprobs": None,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                    }
                ],
            },
        }
    ],
    "usage": {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 40, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 5, "audio_tokens": 0},
    },
}
CHAT_ANSWER = {
    "id": "chatcmpl-2",
    "object": "chat.completion",
    "created": 1_700_000_001,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "2 + 3 = 5"}},
    ],
    "usage": {"prompt_tokens": 130, "completion_tokens": 8, "total_tokens": 138},
}
RESPONSES_API = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1_700_000_000,
    "model": "gpt-4.1",
    "status": "completed",
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Adding them.", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_9",
            "name": "add",
            "arguments": '{"a": 2, "b": 3}',
            "status": "completed",
        },
    ],
    "usage": {
        "input_tokens": 50,
        "output_tokens": 10,
        "total_tokens": 60,
        "input_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 4},
    },
}
ANTHROPIC_MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [
        {"type": "thinking", "thinking": "Two numbers to add.", "signature": "sig"},
        {"type": "text", "text": "Let me add them."},
        {"type": "tool_use", "id": "toolu_01", "name": "add", "input": {"a": 2, "b": 3}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 3,
        "service_tier": "standard",
    },
}


def _variants(model: Any, wire: dict[str, Any]) -> dict[str, Any]:
    sdk_object = model.model_validate(wire)
    return {
        "sdk object": sdk_object,
        "model_dump": sdk_object.model_dump(),
        "wire json": json.loads(json.dumps(wire)),
    }


def _record(response: Any, provider: str, model: str) -> trajectory_pb2.Trajectory:
    recorder = TrajectoryRecorder(sink="memory", trajectory_id="t")
    recorder.start_recording("add 2 and 3", provider, model, 5)
    recorder.record_llm_interaction(MESSAGES, response, provider, model, TOOLS)
    recorder.record_agent_step(1, "calling_tool", MESSAGES, response)
    recorder.finalize_recording(True, "5")
    assert recorder.trajectory is not None
    return recorder.trajectory


def _usage(u: trajectory_pb2.TokenUsage) -> dict[str, int | None]:
    names = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    return {name: getattr(u, name) if u.HasField(name) else None for name in (*names, "reasoning_tokens")}


@pytest.mark.parametrize("variant", ["sdk object", "model_dump", "wire json"])
def test_openai_chat_completion_with_a_tool_call(variant: str) -> None:
    response = _variants(ChatCompletion, CHAT_TOOL_CALL)[variant]
    t = _record(response, "openai", "gpt-4o")
    r = t.llm_interactions[0].response
    assert not r.HasField("content")  # the model said nothing besides the call
    assert r.finish_reason == "tool_calls" and r.model == "gpt-4o-2024-08-06"
    [call] = r.tool_calls
    assert (call.call_id, call.name, call.id) == ("call_1", "add", "call_1")
    assert json.loads(call.arguments_json) == {"a": 2, "b": 3}
    # OpenAI counts the 40 cached tokens within the 100 prompt tokens: 60 are uncached input.
    assert _usage(r.usage) == {
        "input_tokens": 60,
        "output_tokens": 20,
        "cache_read_input_tokens": 40,
        "cache_creation_input_tokens": None,
        "reasoning_tokens": 5,
    }
    assert t.total_usage.input_tokens == 60 and t.total_usage.cache_read_input_tokens == 40
    # gpt-4o: 2.5 input, 10 output, 1.25 cache read (USD per million = micro-USD per token).
    assert t.cost_micro_usd == 60 * 2.5 + 20 * 10 + 40 * 1.25
    assert t.agent_steps[0].llm_response == r  # the step's response, read the same way


@pytest.mark.parametrize("variant", ["sdk object", "model_dump", "wire json"])
def test_openai_chat_completion_with_an_answer(variant: str) -> None:
    response = _variants(ChatCompletion, CHAT_ANSWER)[variant]
    r = _record(response, "openai", "gpt-4o").llm_interactions[0].response
    assert (r.content, r.finish_reason, len(r.tool_calls)) == ("2 + 3 = 5", "stop", 0)
    assert (r.usage.input_tokens, r.usage.output_tokens) == (130, 8)
    assert not r.usage.HasField("cache_read_input_tokens")


def test_a_refusal_is_kept() -> None:
    refused = json.loads(json.dumps(CHAT_ANSWER))
    refused["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": "I can't help."}
    r = _record(ChatCompletion.model_validate(refused), "openai", "gpt-4o").llm_interactions[0].response
    assert json.loads(r.extra_json) == {"refusal": "I can't help."}


@pytest.mark.parametrize("variant", ["sdk object", "model_dump", "wire json"])
def test_openai_responses_api(variant: str) -> None:
    response = _variants(Response, RESPONSES_API)[variant]
    t = _record(response, "openai", "gpt-4.1")
    r = t.llm_interactions[0].response
    assert (r.content, r.finish_reason, r.model) == ("Adding them.", "completed", "gpt-4.1")
    [call] = r.tool_calls
    assert (call.call_id, call.name, call.id) == ("call_9", "add", "fc_1")
    assert json.loads(call.arguments_json) == {"a": 2, "b": 3}
    assert _usage(r.usage) == {
        "input_tokens": 30,
        "output_tokens": 10,
        "cache_read_input_tokens": 20,
        "cache_creation_input_tokens": None,
        "reasoning_tokens": 4,
    }
    assert t.cost_micro_usd == 30 * 2 + 10 * 8 + 20 * 0.5  # gpt-4.1


def test_an_incomplete_responses_api_answer_gives_its_reason() -> None:
    cut = json.loads(json.dumps(RESPONSES_API))
    cut.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    r = _record(Response.model_validate(cut), "openai", "gpt-4.1").llm_interactions[0].response
    assert r.finish_reason == "max_output_tokens"


@pytest.mark.parametrize("variant", ["sdk object", "model_dump", "wire json"])
def test_anthropic_message(variant: str) -> None:
    response = _variants(anthropic.types.Message, ANTHROPIC_MESSAGE)[variant]
    t = _record(response, "anthropic", "claude-sonnet-4-20250514")
    r = t.llm_interactions[0].response
    assert (r.content, r.finish_reason) == ("Let me add them.", "tool_use")  # thinking not recorded
    [call] = r.tool_calls
    assert (call.call_id, call.name, call.id) == ("toolu_01", "add", "toolu_01")
    assert json.loads(call.arguments_json) == {"a": 2, "b": 3}
    assert _usage(r.usage) == {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 3,
        "cache_creation_input_tokens": 2,
        "reasoning_tokens": None,
    }
    assert json.loads(r.usage.extra_json) == {"service_tier": "standard"}
    # claude-sonnet-4: 3 input, 15 output, 0.3 cache read, 3.75 cache creation; rounded once.
    assert t.cost_micro_usd == round(10 * 3 + 5 * 15 + 3 * 0.3 + 2 * 3.75)


def test_the_three_spellings_record_the_same_trajectory() -> None:
    for model, wire, provider in (
        (ChatCompletion, CHAT_TOOL_CALL, "openai"),
        (Response, RESPONSES_API, "openai"),
        (anthropic.types.Message, ANTHROPIC_MESSAGE, "anthropic"),
    ):
        recorded = [_record(response, provider, "m") for response in _variants(model, wire).values()]
        for t in recorded:  # the clock is the only difference left
            for name in ("start_time", "end_time", "execution_time_seconds"):
                t.ClearField(name)
            t.llm_interactions[0].ClearField("timestamp")
            t.agent_steps[0].ClearField("timestamp")
        assert recorded[0] == recorded[1] == recorded[2]


def test_a_file_recording_of_sdk_responses_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    recorder = TrajectoryRecorder(path, agent_name="sdk-agent")
    recorder.start_recording("add 2 and 3", "anthropic", "claude-sonnet-4-20250514", 5)
    response = anthropic.types.Message.model_validate(ANTHROPIC_MESSAGE)
    recorder.record_llm_interaction(MESSAGES, response, "anthropic", "claude-sonnet-4-20250514", TOOLS)
    recorder.finalize_recording(True, "5")
    document = json.loads(path.read_text())
    written = document["llm_interactions"][0]["response"]
    assert written["content"] == "Let me add them." and written["finish_reason"] == "tool_use"
    assert written["tool_calls"][0]["arguments"] == {"a": 2, "b": 3}
    assert written["usage"]["cache_read_input_tokens"] == 3
    assert load_trae_file(path) == [recorder.trajectory]
