"""Cohort JSONL and OpenAI chat fine-tuning records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk.trajectories import trae
from cohort.sdk.trajectories.jsonl import json_line, trajectory_from_json_line, trajectory_to_json_line
from cohort.sdk.trajectories.openai_chat import (
    trajectory_to_openai_chat,
    trajectory_to_openai_chat_line,
    validate_openai_chat_record,
)

DATA = Path(__file__).parent.parent / "data"


def _seed() -> trajectory_pb2.Trajectory:
    return trae.trae_to_trajectory(json.loads((DATA / "trae_seed_example.json").read_text(encoding="utf-8")))


def _real_world() -> trajectory_pb2.Trajectory:
    return trae.trae_to_trajectory(json.loads((DATA / "trae_real_world.json").read_text(encoding="utf-8"))[0])


def _native() -> trajectory_pb2.Trajectory:
    t = _seed()
    t.trajectory_id = "traj-1"
    t.iteration = 2**40
    t.agent.name = "toolbench-agent"
    t.labels["split"] = "heldout\u2028line"
    t.total_usage.input_tokens = 5
    t.reward = 0.75
    decision = t.decisions.add(head="next_tool", options=["bash", "edit"], chosen_index=1, chosen="edit")
    decision.features["bias"] = 1.0
    decision.option_features.add().values["x"] = 0.5
    return t


# --- Cohort JSONL ---------------------------------------------------------------------------------


def test_jsonl_round_trip():
    t = _native()
    line = trajectory_to_json_line(t)
    assert "\n" not in line and "\u2028" not in line and not line.endswith("\n")
    assert trajectory_from_json_line(line) == t


def test_jsonl_is_protobuf_canonical_json():
    value = json.loads(trajectory_to_json_line(_native()))
    assert value["trajectoryId"] == "traj-1"
    assert value["iteration"] == str(2**40)  # int64 as a string
    assert value["terminationReason"] == "TERMINATION_REASON_COMPLETED"
    assert value["startTime"] == "2025-06-12T22:05:46.433797Z"


def test_jsonl_accepts_proto_field_names():
    t = trajectory_from_json_line('{"trajectory_id": "a", "agent_steps": [{"step_number": 2}]}')
    assert t.trajectory_id == "a" and t.agent_steps[0].step_number == 2


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"task": ', "line 3"),
        ("[1, 2]", "line 3"),
        ('{"nope": 1}', "nope"),
        ('{"agentSteps": [{"stepNumber": 1}, {"stepNumber": "two"}]}', "agent_steps[1].step_number"),
        ('{"agentSteps": [{"surprise": true}]}', "agent_steps[0].surprise"),
        ('{"terminationReason": "TERMINATION_REASON_BORED"}', "termination_reason"),
        ('{"outcome": {"kind": 17}}', "outcome.kind"),
        (
            '{"llmInteractions": [{"response": {"usage": {"inputTokens": "many"}}}]}',
            "llm_interactions[0].response.usage.input_tokens",
        ),
        ('{"labels": {"split": 3}}', "labels"),
        ('{"startTime": "yesterday"}', "start_time"),
    ],
)
def test_jsonl_bad_lines_name_line_and_field(line, field):
    with pytest.raises(InvalidArgument) as caught:
        trajectory_from_json_line(line, line_number=3)
    assert caught.value.field == field
    assert caught.value.metadata["line"] == "3"
    assert "line 3" in str(caught.value)


def test_json_line_escapes_unicode_line_separators():
    line = json_line({"a": "x\u2028y\u2029z\x85"})
    assert len(line.splitlines()) == 1
    assert json.loads(line) == {"a": "x\u2028y\u2029z\x85"}


# --- OpenAI chat ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_seed, _real_world], ids=["seed", "real_world"])
def test_openai_chat_record_is_valid_with_tools_and_tool_calls(make):
    record = trajectory_to_openai_chat(make())
    validate_openai_chat_record(record)
    assert record["tools"] and all(tool["type"] == "function" for tool in record["tools"])
    calls = [call for m in record["messages"] for call in m.get("tool_calls", ())]
    assert calls and all(isinstance(call["function"]["arguments"], str) for call in calls)
    assert json.loads(trajectory_to_openai_chat_line(make())) == record


def test_openai_chat_seed_conversation():
    record = trajectory_to_openai_chat(_seed())
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
    call = record["messages"][-1]["tool_calls"][0]
    assert call == {
        "id": "call_123",
        "type": "function",
        "function": {
            "name": "str_replace_based_edit_tool",
            "arguments": '{"command": "create", "path": "hello.py", "file_text": "print(\'Hello, World!\')"}',
        },
    }
    assert [t["function"]["name"] for t in record["tools"]] == [
        "str_replace_based_edit_tool",
        "bash",
        "task_done",
    ]
    assert record["tools"][0]["function"]["parameters"] == {"type": "object"}


def test_openai_chat_trae_incremental_inputs_are_concatenated():
    record = trajectory_to_openai_chat(_real_world())
    roles = [(m["role"], m.get("tool_call_id")) for m in record["messages"]]
    assert roles == [
        ("system", None),
        ("user", None),
        ("assistant", None),
        ("tool", "call_a1"),
        ("assistant", None),
        ("tool", "call_b2"),  # answered from the steps' tool results
        ("assistant", None),
    ]
    assert record["messages"][3]["content"] == "AssertionError: expected 3, got 2"
    assert record["messages"][1]["content"][0] == {"type": "text", "text": "Fix the failing test."}


def test_openai_chat_from_steps_when_there_are_no_interactions():
    t = _seed()
    del t.llm_interactions[:]
    record = trajectory_to_openai_chat(t)
    validate_openai_chat_record(record)
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert record["messages"][-1]["content"] == t.final_result
    assert record["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_123",
        "content": "File created successfully",
    }


def test_openai_chat_generates_missing_call_ids():
    t = trajectory_pb2.Trajectory(task="t")
    step = t.agent_steps.add(step_number=1)
    step.tool_calls.add(name="bash", arguments_json='{"command": "ls"}')
    record = trajectory_to_openai_chat(t)
    assert record["messages"][1]["tool_calls"][0]["id"] == "call_1"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("messages"), "messages"),
        (lambda r: r.update(extra=1), "extra"),
        (lambda r: r["messages"][0].update(role="robot"), "messages[0].role"),
        (lambda r: r["messages"][1].update(content=None), "messages[1].content"),
        (lambda r: r["messages"][2]["tool_calls"][0].update(type="tool"), "messages[2].tool_calls[0].type"),
        (lambda r: r["messages"][2]["tool_calls"][0].update(id=""), "messages[2].tool_calls[0].id"),
        (
            lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments={"a": 1}),
            "messages[2].tool_calls[0].function.arguments",
        ),
        (
            lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments="{oops"),
            "messages[2].tool_calls[0].function.arguments",
        ),
        (
            lambda r: r["messages"][2]["tool_calls"][0]["function"].update(name="unlisted"),
            "messages[2].tool_calls[0].function.name",
        ),
        (
            lambda r: r["messages"].append({"role": "tool", "tool_call_id": "nobody", "content": "x"}),
            "messages[3].tool_call_id",
        ),
        (lambda r: r["tools"][0].update(type="retrieval"), "tools[0].type"),
        (
            lambda r: r["tools"][0]["function"].update(parameters={"type": "array"}),
            "tools[0].function.parameters",
        ),
        (lambda r: r.update(messages=[{"role": "user", "content": "hi"}]), "messages"),
    ],
)
def test_validate_openai_chat_record_names_the_field(mutate, field):
    record = trajectory_to_openai_chat(_seed())
    mutate(record)
    with pytest.raises(InvalidArgument) as caught:
        validate_openai_chat_record(record)
    assert caught.value.field == field


# --- Scores in trae-json ----------------------------------------------------------------------------


def test_trae_json_record_adds_the_score_under_cohort_and_keeps_a_recorded_cohort_object():
    from cohort.services.collector.export import trae_json_record

    document = json.loads((DATA / "trae_seed_example.json").read_text(encoding="utf-8"))
    # Unscored: exactly the document imported.
    assert json.loads(trae_json_record(trae.trae_to_trajectory(document))) == document

    recorded = {**document, "cohort": {"trajectory_id": "traj-9", "iteration": 3}}
    t = trae.trae_to_trajectory(recorded)
    t.reward = 0.5
    t.reward_components.add(name="outcome", value=0.5, weight=1.0)
    t.decisions.add(head="next_tool", options=["a"], chosen="a").advantage = -1.5
    t.decisions.add(head="next_tool", options=["a"], chosen="a")
    exported = json.loads(trae_json_record(t))
    assert {k: v for k, v in exported.items() if k != "cohort"} == document
    block = exported["cohort"]
    assert (block["trajectory_id"], block["iteration"]) == ("traj-9", 3)
    assert {k: block[k] for k in ("reward", "reward_components", "advantage", "decision_advantages")} == {
        "reward": 0.5,
        "reward_components": [{"name": "outcome", "value": 0.5, "weight": 1.0, "detail": ""}],
        "advantage": None,
        "decision_advantages": [-1.5, None],
    }

    plain = trae.trae_to_trajectory(document)
    plain.reward = 1.0
    assert json.loads(trae_json_record(plain))["cohort"]["reward"] == 1.0
