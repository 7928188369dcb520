"""Chat transcripts -> trajectories, with the inferred outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk.trajectories.openai_chat import trajectory_to_openai_chat, validate_openai_chat_record
from cohort.sdk.trajectories.trae import trajectory_to_trae
from cohort.sdk.trajectories.transcript import transcript_to_trajectory

Kind = trajectory_pb2.OutcomeKind


def _call(call_id: str, name: str, arguments) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _opening() -> list[dict]:
    return [
        {"role": "system", "content": "You are a helpful agent."},
        {"role": "user", "content": [{"type": "text", "text": "What's the weather in Paris?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                _call("c1", "get_weather", '{"city": "Paris"}'),
                _call("c2", "get_time", {"tz": "CET"}),
            ],
            "usage": {
                "prompt_tokens": 50,
                "completion_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 20},
            },
        },
    ]


def _success() -> list[dict]:
    return _opening() + [
        {"role": "tool", "tool_call_id": "c1", "content": "18°C, sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "14:05"},
        {
            "role": "assistant",
            "content": "Here is the weather: 18°C and sunny in Paris at 14:05.",
            "usage": {"prompt_tokens": 70, "completion_tokens": 12},
        },
    ]


def test_success_transcript():
    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    t = transcript_to_trajectory(
        _success(),
        model="gpt-4.1",
        provider="openai",
        started_at=start,
        finished_at=start + timedelta(seconds=3.5),
    )
    assert t.task == "What's the weather in Paris?"
    assert t.final_result.startswith("Here is the weather")
    assert not t.HasField("success")
    assert t.outcome.kind == Kind.OUTCOME_KIND_SUCCESS and t.outcome.inferred
    assert 0.5 < t.outcome.confidence <= 1
    assert any("successful tool results" in r for r in t.outcome.reasons)
    assert t.termination_reason == trajectory_pb2.TERMINATION_REASON_COMPLETED

    assert [s.state for s in t.agent_steps] == ["calling_tool", "completed"]
    first = t.agent_steps[0]
    assert [c.name for c in first.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(first.tool_calls[1].arguments_json) == {"tz": "CET"}
    assert [(r.call_id, r.success, r.result) for r in first.tool_results] == [
        ("c1", True, "18°C, sunny"),
        ("c2", True, "14:05"),
    ]
    assert [m.role for m in first.llm_messages] == ["system", "user"]
    assert len(t.llm_interactions) == 2
    assert len(t.llm_interactions[0].input_messages) == 2 and len(t.llm_interactions[1].input_messages) == 5
    assert t.llm_interactions[1].response.finish_reason == "stop"

    assert t.total_usage.input_tokens == 120 and t.total_usage.output_tokens == 22
    assert t.total_usage.cache_read_input_tokens == 20
    assert t.execution_time_seconds == 3.5
    assert json.loads(t.extra_json) == {"tools_used": ["get_weather", "get_time"]}
    # The result is usable by the other formats.
    assert trajectory_to_trae(t)["success"] is None
    validate_openai_chat_record(trajectory_to_openai_chat(t))


def test_failure_transcript():
    messages = _opening() + [
        {"role": "tool", "tool_call_id": "c1", "content": "Error: weather service unavailable"},
        {"role": "tool", "tool_call_id": "c2", "content": "14:05", "is_error": False},
        {"role": "assistant", "content": "Sorry, I could not get the weather for Paris."},
    ]
    t = transcript_to_trajectory(messages)
    assert t.outcome.kind == Kind.OUTCOME_KIND_FAILURE and t.outcome.inferred
    assert t.agent_steps[0].tool_results[0].error == "Error: weather service unavailable"
    assert not t.agent_steps[0].tool_results[0].success and t.agent_steps[0].tool_results[1].success
    reasons = " ".join(t.outcome.reasons)
    assert "tool results reported errors" in reasons and "apologises" in reasons


def test_transcript_without_final_answer_fails():
    t = transcript_to_trajectory(_opening())
    assert t.outcome.kind == Kind.OUTCOME_KIND_FAILURE
    assert t.termination_reason == trajectory_pb2.TERMINATION_REASON_IN_PROGRESS
    assert not t.HasField("final_result")


def test_partial_transcript():
    messages = _opening() + [
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": "Traceback (most recent call last):\n  ...\nTimeoutError",
        },
        {"role": "tool", "tool_call_id": "c2", "content": "14:05"},
        {"role": "assistant", "content": "Done: it is 14:05 in Paris; the weather lookup timed out."},
    ]
    t = transcript_to_trajectory(messages)
    assert t.outcome.kind == Kind.OUTCOME_KIND_PARTIAL
    assert 0 <= t.outcome.confidence <= 1
    assert any(r.startswith("failure:") for r in t.outcome.reasons)
    assert any(r.startswith("success:") for r in t.outcome.reasons)


def test_reported_success_overrides_the_heuristic():
    t = transcript_to_trajectory(_opening(), success=True, task="weather", final_result="sunny")
    assert t.success and t.task == "weather" and t.final_result == "sunny"
    assert (
        t.outcome.kind == Kind.OUTCOME_KIND_SUCCESS and t.outcome.confidence == 1 and not t.outcome.inferred
    )


def test_naive_and_offset_datetimes_become_utc():
    t = transcript_to_trajectory(
        _success(),
        started_at=datetime(2025, 1, 1, 12, 0, 0),
        finished_at=datetime(2025, 1, 1, 13, 0, 10, tzinfo=timezone(timedelta(hours=1))),
    )
    assert t.start_time.ToJsonString() == "2025-01-01T12:00:00Z"
    assert t.execution_time_seconds == 10


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda m: m.__setitem__(1, "hello"), "messages[1]"),
        (lambda m: m[1].pop("role"), "messages[1].role"),
        (lambda m: m[1].update(role="narrator"), "messages[1].role"),
        (lambda m: m[1].update(content=42), "messages[1].content"),
        (lambda m: m[3].update(tool_call_id="c9"), "messages[3].tool_call_id"),
        (lambda m: m[3].pop("tool_call_id"), "messages[3].tool_call_id"),
        (lambda m: m[2]["tool_calls"][0].pop("id"), "messages[2].tool_calls[0].id"),
        (
            lambda m: m[2]["tool_calls"][1]["function"].update(name=None),
            "messages[2].tool_calls[1].function.name",
        ),
        (lambda m: m[2].update(tool_calls="get_weather"), "messages[2].tool_calls"),
        (lambda m: m[2]["usage"].update(prompt_tokens="fifty"), "messages[2].usage.prompt_tokens"),
        (lambda m: m[3].update(is_error="no"), "messages[3].is_error"),
        (lambda m: m[1].update(tool_calls=[_call("x", "f", "{}")]), "messages[1].tool_calls"),
    ],
)
def test_bad_messages_name_the_field(mutate, field):
    messages = _success()
    mutate(messages)
    with pytest.raises(InvalidArgument) as caught:
        transcript_to_trajectory(messages)
    assert caught.value.field == field


def test_messages_must_be_a_list():
    with pytest.raises(InvalidArgument) as caught:
        transcript_to_trajectory("hello")
    assert caught.value.field == "messages"


def test_tool_answering_a_later_call_is_rejected():
    messages = _success()
    messages.insert(2, {"role": "tool", "tool_call_id": "c1", "content": "too early"})
    with pytest.raises(InvalidArgument) as caught:
        transcript_to_trajectory(messages)
    assert caught.value.field == "messages[2].tool_call_id"


def test_invalid_argument_json_is_kept_as_text():
    messages = _success()
    messages[2]["tool_calls"][0]["function"]["arguments"] = '{"city": "Par'
    t = transcript_to_trajectory(messages)
    assert json.loads(t.agent_steps[0].tool_calls[0].arguments_json) == '{"city": "Par'
