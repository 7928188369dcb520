"""Trae Agent trajectory JSON <-> Cohort Trajectory: exact round trips and rejected documents."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk.trajectories import trae
from cohort.sdk.trajectories.jsonl import trajectory_from_json_line, trajectory_to_json_line

DATA = Path(__file__).parent.parent / "data"
SEED = DATA / "trae_seed_example.json"
REAL_WORLD = DATA / "trae_real_world.json"


def _documents() -> list[tuple[str, dict]]:
    real = json.loads(REAL_WORLD.read_text(encoding="utf-8"))
    return [("seed", json.loads(SEED.read_text(encoding="utf-8")))] + [
        (f"real_world[{i}]", doc) for i, doc in enumerate(real)
    ]


DOCUMENTS = _documents()
IDS = [name for name, _ in DOCUMENTS]


def _key_paths(value, path=""):
    """Every object's key order, so equality also checks ordering at every level."""
    if isinstance(value, dict):
        yield path, list(value)
        for key, item in value.items():
            yield from _key_paths(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _key_paths(item, f"{path}[{i}]")


def _assert_exact(original: dict, exported: dict) -> None:
    text = trae.dumps_trae(exported)
    assert json.loads(text) == original
    assert list(_key_paths(json.loads(text))) == list(_key_paths(original))
    assert text == trae.dumps_trae(original)


@pytest.mark.parametrize(("name", "document"), DOCUMENTS, ids=IDS)
def test_round_trip_is_exact(name, document):
    _assert_exact(document, trae.trajectory_to_trae(trae.trae_to_trajectory(document)))


@pytest.mark.parametrize(("name", "document"), DOCUMENTS, ids=IDS)
def test_round_trip_through_protobuf_binary(name, document):
    trajectory = trae.trae_to_trajectory(document)
    restored = trajectory_pb2.Trajectory.FromString(trajectory.SerializeToString())
    _assert_exact(document, trae.trajectory_to_trae(restored))


@pytest.mark.parametrize(("name", "document"), DOCUMENTS, ids=IDS)
def test_round_trip_through_cohort_jsonl(name, document):
    line = trajectory_to_json_line(trae.trae_to_trajectory(document))
    assert "\n" not in line
    _assert_exact(document, trae.trajectory_to_trae(trajectory_from_json_line(line)))


def test_round_trip_does_not_mutate_the_input():
    document = DOCUMENTS[1][1]
    before = copy.deepcopy(document)
    trae.trajectory_to_trae(trae.trae_to_trajectory(document))
    assert document == before


def test_seed_fields_map_to_proto():
    t = trae.trae_to_trajectory(DOCUMENTS[0][1])
    assert t.task == "Create a hello world Python script"
    assert t.start_time.ToJsonString() == "2025-06-12T22:05:46.433797Z"
    assert t.max_steps == 20 and t.success and t.execution_time_seconds == pytest.approx(28.689999)
    response = t.llm_interactions[0].response
    assert response.usage.input_tokens == 150
    assert not response.usage.HasField("reasoning_tokens")
    assert json.loads(response.tool_calls[0].arguments_json)["path"] == "hello.py"
    assert response.tool_calls[0].arguments_json == json.dumps(
        {"command": "create", "path": "hello.py", "file_text": "print('Hello, World!')"}, ensure_ascii=False
    )
    assert list(t.llm_interactions[0].tools_available) == ["str_replace_based_edit_tool", "bash", "task_done"]
    step = t.agent_steps[0]
    assert step.tool_results[0].success and step.tool_results[0].result == "File created successfully"
    assert not step.tool_results[0].HasField("error") and not step.HasField("reflection")
    assert t.termination_reason == trajectory_pb2.TERMINATION_REASON_COMPLETED
    assert t.outcome.kind == trajectory_pb2.OUTCOME_KIND_SUCCESS and not t.outcome.inferred


def test_real_world_details_map_to_proto():
    t = trae.trae_to_trajectory(DOCUMENTS[1][1])
    interaction = t.llm_interactions[0]
    assert json.loads(interaction.extra_json)["latency_ms"] == 2310
    assert json.loads(interaction.input_messages[1].content_json)[0]["type"] == "text"
    assert not interaction.input_messages[2].HasField("content")
    assert interaction.input_messages[2].tool_call.id == "fc_001"
    assert json.loads(interaction.response.usage.extra_json) == {"service_tier": "default"}
    assert t.llm_interactions[1].tools_available_null
    assert not t.llm_interactions[1].response.tool_calls
    assert t.agent_steps[0].llm_messages_null
    assert t.agent_steps[1].tool_calls_null and t.agent_steps[1].tool_results_null
    assert not t.agent_steps[1].llm_messages_null and not t.agent_steps[1].HasField("llm_response")
    # Offsets are converted to UTC: 22:07:01.5+08:00 is 14:07:01.5Z.
    assert t.end_time.ToJsonString() == "2025-06-12T14:07:01.500Z"
    top = json.loads(t.extra_json)
    assert list(top)[:2] == ["trae_version", "git_commit"]
    assert top[trae.HINT_KEY]["timestamps"] == "naive"


def test_in_progress_document_keeps_empty_timestamps():
    t = trae.trae_to_trajectory(DOCUMENTS[2][1])
    assert not t.HasField("start_time") and not t.HasField("end_time")
    assert t.termination_reason == trajectory_pb2.TERMINATION_REASON_IN_PROGRESS
    assert trae.trajectory_to_trae(t)["start_time"] == ""


def test_native_trajectory_exports_every_documented_key():
    t = trajectory_pb2.Trajectory(task="native", provider="openai", model="gpt-4.1")
    t.start_time.FromJsonString("2025-01-02T03:04:05.678Z")
    interaction = t.llm_interactions.add(provider="openai", model="gpt-4.1")
    interaction.timestamp.FromJsonString("2025-01-02T03:04:06Z")
    interaction.input_messages.add(role="user", content="hi")
    interaction.response.tool_calls.add(call_id="c1", name="bash", arguments_json='{"command": "ls"}')
    step = t.agent_steps.add(step_number=1, state="calling_tool")
    step.tool_results.add(call_id="c1", success=True, result="ok")

    document = trae.trajectory_to_trae(t)
    assert list(document) == list(trae.TOP_KEYS)
    assert document["start_time"] == "2025-01-02T03:04:05.678000+00:00"
    assert document["end_time"] is None and document["max_steps"] is None and document["success"] is None
    exported = document["llm_interactions"][0]
    assert list(exported) == list(trae.INTERACTION_KEYS)
    assert exported["timestamp"] == "2025-01-02T03:04:06+00:00"
    assert list(exported["response"]) == list(trae.RESPONSE_KEYS)
    assert exported["response"]["usage"] is None
    assert exported["response"]["tool_calls"][0] == {
        "call_id": "c1",
        "name": "bash",
        "arguments": {"command": "ls"},
        "id": None,
    }
    assert list(document["agent_steps"][0]) == list(trae.STEP_KEYS)
    assert list(document["agent_steps"][0]["tool_results"][0]) == list(trae.TOOL_RESULT_KEYS)
    # And what a native trajectory exports imports back to the same Trae document.
    assert trae.trajectory_to_trae(trae.trae_to_trajectory(document)) == document


def test_edited_timestamp_is_exported_not_the_stale_original():
    t = trae.trae_to_trajectory(DOCUMENTS[1][1])
    t.end_time.FromJsonString("2025-06-12T14:10:00Z")
    t.llm_interactions[0].timestamp.FromJsonString("2025-06-12T14:05:50Z")
    document = trae.trajectory_to_trae(t)
    assert document["end_time"] == "2025-06-12T14:10:00"  # the file's naive style
    assert document["llm_interactions"][0]["timestamp"] == "2025-06-12T14:05:50"


def test_nanosecond_timestamps_round_trip():
    document = {**DOCUMENTS[0][1], "start_time": "2025-06-12T22:05:46.123456789"}
    t = trae.trae_to_trajectory(document)
    assert t.start_time.nanos == 123456789
    _assert_exact(document, trae.trajectory_to_trae(t))


def test_dumps_trae_matches_traes_writer():
    document = {"task": "ünï", "n": [1]}
    assert trae.dumps_trae(document) == json.dumps(document, indent=2, ensure_ascii=False)
    assert (
        json.loads(trae.trajectory_to_trae_json(trae.trae_to_trajectory(DOCUMENTS[0][1]))) == DOCUMENTS[0][1]
    )
    assert "\n" not in trae.trajectory_to_trae_json(trae.trae_to_trajectory(DOCUMENTS[1][1]))


def _with(path: str, value):
    """The seed document with the value at a dotted/indexed path replaced."""
    document = copy.deepcopy(DOCUMENTS[0][1])
    target = document
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    target[int(last) if last.isdigit() else last] = value
    return document


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("task", 7),
        ("start_time", "June 12th"),
        ("start_time", "2025-13-40T99:00:00"),
        ("end_time", 1718230000),
        ("max_steps", "20"),
        ("max_steps", True),
        ("max_steps", 2**40),
        ("success", "yes"),
        ("execution_time", "fast"),
        ("llm_interactions", {}),
        ("llm_interactions[0]", "interaction"),
        ("llm_interactions[0].timestamp", "not a time"),
        ("llm_interactions[0].input_messages[1].role", None),
        ("llm_interactions[0].response.usage.input_tokens", 1.5),
        ("llm_interactions[0].response.tool_calls[0].name", ["bash"]),
        ("llm_interactions[0].tools_available[1]", 3),
        ("agent_steps[0].step_number", "1"),
        ("agent_steps[0].step_number", 1.0),
        ("agent_steps[0].tool_results[0].success", "true"),
        ("agent_steps[0].tool_results[0].success", None),
        ("agent_steps[0].tool_calls", "call_123"),
        ("agent_steps[0].llm_response", []),
        ("agent_steps[0].reflection", 3),
    ],
)
def test_bad_documents_name_the_field(path, value):
    with pytest.raises(InvalidArgument) as caught:
        trae.trae_to_trajectory(_with(path, value))
    assert caught.value.field == path


@pytest.mark.parametrize("document", [[], "trajectory", 3, None])
def test_top_level_must_be_an_object(document):
    with pytest.raises(InvalidArgument) as caught:
        trae.trae_to_trajectory(document)
    assert caught.value.field == "document"


def test_load_trae_file_single_and_array(tmp_path):
    assert len(trae.load_trae_file(SEED)) == 1
    loaded = trae.load_trae_file(REAL_WORLD)
    assert [t.task for t in loaded] == [doc["task"] for _, doc in DOCUMENTS[1:]]


def test_load_trae_file_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "task": "x",\n  "model": \n}\n', encoding="utf-8")
    with pytest.raises(InvalidArgument) as caught:
        trae.load_trae_file(path)
    assert caught.value.field == str(path)
    assert "line 4, column 1" in caught.value.description


def test_load_trae_file_names_the_array_element(tmp_path):
    path = tmp_path / "many.json"
    bad = _with("agent_steps[0].step_number", "one")
    path.write_text(json.dumps([DOCUMENTS[0][1], bad]), encoding="utf-8")
    with pytest.raises(InvalidArgument) as caught:
        trae.load_trae_file(path)
    assert caught.value.field == "[1].agent_steps[0].step_number"
    assert str(path) in caught.value.description


def test_load_trae_file_rejects_other_top_levels_and_missing_files(tmp_path):
    path = tmp_path / "number.json"
    path.write_text("42", encoding="utf-8")
    with pytest.raises(InvalidArgument):
        trae.load_trae_file(path)
    with pytest.raises(InvalidArgument) as caught:
        trae.load_trae_file(tmp_path / "missing.json")
    assert caught.value.field == str(tmp_path / "missing.json")


def test_bad_extra_json_is_reported_on_export():
    t = trae.trae_to_trajectory(DOCUMENTS[0][1])
    t.agent_steps[0].extra_json = "{not json"
    with pytest.raises(InvalidArgument) as caught:
        trae.trajectory_to_trae(t)
    assert caught.value.field == "agent_steps[0].extra_json"
