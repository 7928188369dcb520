"""Importing a file written by Cohort's recorder honours its `"cohort"` block.

record -> file -> import gives the very `Trajectory` the recorder sends to the collector (its
collector sink submits `recorder.trajectory`), and exporting that as Trae JSON gives the file back,
byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trae_types import LLMMessage, LLMResponse, LLMUsage, ToolCall, ToolResult

from cohort.api.collector.v1 import collector_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk import TrajectoryRecorder, recover_journal
from cohort.sdk.trajectories import trae
from cohort.services.collector.export import render_record

MODEL = "gpt-4o"
IDENTITY = {
    "agent_name": "my-agent",
    "agent_version": "1.4",
    "labels": {"split": "train", "job_attempt": "1"},
    "job_id": "job-7",
    "group_id": "grp-3",
    "iteration": 12,
    "query_id": "q-42",
}


def _run(recorder: TrajectoryRecorder, *, steps: int = 2, calls: bool = True) -> None:
    recorder.start_recording("Add 2 and 3", "openai", MODEL, 10)
    messages = [LLMMessage("user", "Add 2 and 3")]
    for step in range(1, steps + 1):
        call = ToolCall("add", f"call_{step}", {"a": 2, "b": 3})
        response = LLMResponse(
            f"step {step}", LLMUsage(100, 10, cache_read_input_tokens=20), MODEL, "tool_calls", [call]
        )
        if calls:
            recorder.record_llm_interaction(messages, response, "openai", MODEL, ["add"])
        recorder.record_decision(
            "next_tool",
            ["add", "answer"],
            0,
            -0.4,
            features={"step": float(step)},
            probabilities=[0.67, 0.33],
            option_features=[{"bias": 1.0}, {"bias": 0.5}],
            policy_id="pol-9",
            policy_version=5,
        )
        result = ToolResult(call.call_id, "add", True, "5")
        recorder.record_agent_step(
            step, "calling_tool", messages, response if calls else None, [call], [result]
        )
    recorder.set_outcome("partial", 0.5, ["answered late"], confidence=0.8)
    recorder.set_termination("max_steps", "ran out")
    recorder.finalize_recording(False, "5")


def _recorded(tmp_path: Path, **kwargs) -> tuple[TrajectoryRecorder, Path]:
    path = tmp_path / "run.json"
    recorder = TrajectoryRecorder(path, **IDENTITY)
    _run(recorder, **kwargs)
    assert recorder.final_path == path
    return recorder, path


def test_import_gives_the_trajectory_the_collector_sink_sends(tmp_path: Path) -> None:
    recorder, path = _recorded(tmp_path)
    [imported] = trae.load_trae_file(path)
    assert imported.trajectory_id == recorder.trajectory_id
    assert (imported.agent.name, imported.agent.version) == ("my-agent", "1.4")
    assert dict(imported.labels) == IDENTITY["labels"]
    assert (imported.job_id, imported.group_id, imported.iteration, imported.query_id) == (
        "job-7",
        "grp-3",
        12,
        "q-42",
    )
    assert (imported.policy.policy_id, imported.policy.version) == ("pol-9", 5)
    assert [d.chosen for d in imported.decisions] == ["add", "add"]
    assert imported.decisions[1].step_number == 2 and imported.decisions[0].log_prob == -0.4
    assert dict(imported.decisions[0].option_features[1].values) == {"bias": 0.5}
    assert imported.termination_reason == trajectory_pb2.TERMINATION_REASON_MAX_STEPS
    assert imported.termination_detail == "ran out"
    assert imported.outcome.kind == trajectory_pb2.OUTCOME_KIND_PARTIAL and imported.outcome.score == 0.5
    assert (
        imported.total_usage.input_tokens == 200
        and imported.cost_micro_usd == recorder.trajectory.cost_micro_usd
    )
    # Every field, the hints included: the collector stores (and deduplicates) the same bytes.
    assert imported == recorder.trajectory
    assert imported.SerializeToString(deterministic=True) == recorder.trajectory.SerializeToString(
        deterministic=True
    )


def test_export_as_trae_json_gives_the_file_back(tmp_path: Path) -> None:
    _, path = _recorded(tmp_path)
    text = path.read_text(encoding="utf-8")
    [imported] = trae.load_trae_file(path)
    stored = trajectory_pb2.Trajectory.FromString(imported.SerializeToString())
    assert trae.dumps_trae(trae.trajectory_to_trae(stored)) == text
    record = render_record(collector_pb2.EXPORT_FORMAT_TRAE_JSON, stored)
    assert trae.dumps_trae(json.loads(record)) == text


def test_maps_are_written_in_key_order(tmp_path: Path) -> None:
    """A proto map iterates in an order that changes between processes (a file recorded in one
    and exported from another would differ): the block writes its maps sorted."""
    names = [f"key-{c}" for c in "hgfedcba"]
    path = tmp_path / "run.json"
    recorder = TrajectoryRecorder(path, labels={name: "v" for name in names})
    recorder.start_recording("t", "openai", MODEL, 1)
    recorder.record_decision("h", ["a", "b"], 0, -0.1, features={name: 1.0 for name in names})
    recorder.finalize_recording(True)
    block = json.loads(path.read_text())["cohort"]
    assert list(block["labels"]) == sorted(names)
    assert list(block["decisions"][0]["features"]) == sorted(names)
    [imported] = trae.load_trae_file(path)
    reordered = trajectory_pb2.Trajectory()
    reordered.CopyFrom(imported)
    reordered.labels.clear()
    reordered.labels.update({name: "v" for name in reversed(names)})
    assert trae.dumps_trae(trae.trajectory_to_trae(reordered)) == path.read_text()


@pytest.mark.parametrize("case", ["no llm calls", "crashed and recovered"])
def test_other_recordings_round_trip_too(tmp_path: Path, case: str) -> None:
    if case == "no llm calls":
        recorder, path = _recorded(tmp_path, calls=False)
        expected = recorder.trajectory
        assert not expected.HasField("total_usage")
    else:
        path = tmp_path / "run.json"
        recorder = TrajectoryRecorder(path, **IDENTITY)
        recorder.start_recording("Add 2 and 3", "openai", MODEL, 10)
        recorder.record_decision("next_tool", ["add", "answer"], 1, -1.1, policy_id="pol-9", policy_version=5)
        recorder._journal.close()  # the process dies: the journal stays, unfinalized
        recover_journal(path.with_name("run.json.journal"))
        expected = None
    text = path.read_text(encoding="utf-8")
    [imported] = trae.load_trae_file(path)
    if expected is not None:
        assert imported == expected
    else:
        assert imported.termination_reason == trajectory_pb2.TERMINATION_REASON_CRASHED
        assert imported.agent.name == "my-agent" and imported.decisions[0].chosen == "answer"
    assert trae.dumps_trae(trae.trajectory_to_trae(imported)) == text


def test_the_export_shows_the_stored_values(tmp_path: Path) -> None:
    _, path = _recorded(tmp_path)
    [imported] = trae.load_trae_file(path)
    imported.agent.name = "renamed"
    imported.labels["split"] = "heldout"
    block = trae.trajectory_to_trae(imported)["cohort"]
    assert block["agent"]["name"] == "renamed" and block["labels"]["split"] == "heldout"


def test_key_order_and_extra_keys_around_the_block_are_kept(tmp_path: Path) -> None:
    _, path = _recorded(tmp_path)
    original = json.loads(path.read_text())
    block = original.pop("cohort")
    moved = {"cohort": block, **original, "note": "hand-edited"}
    exported = trae.trajectory_to_trae(trae.trae_to_trajectory(moved))
    assert trae.dumps_trae(exported) == trae.dumps_trae(moved)
    trailing = {**original, "note": "hand-edited", "cohort": block}
    t = trae.trae_to_trajectory(trailing)
    assert trae.dumps_trae(trae.trajectory_to_trae(t)) == trae.dumps_trae(trailing)
    assert t.agent.name == "my-agent"


def test_a_null_block_is_an_ordinary_extra_key(tmp_path: Path) -> None:
    _, path = _recorded(tmp_path)
    document = {**json.loads(path.read_text()), "cohort": None}
    t = trae.trae_to_trajectory(document)
    assert t.trajectory_id == "" and t.agent.name == ""
    assert trae.dumps_trae(trae.trajectory_to_trae(t)) == trae.dumps_trae(document)


def test_a_trajectory_imported_before_the_block_was_read_exports_unchanged(tmp_path: Path) -> None:
    """Stored earlier, the block sits in `extra_json` as an unknown key: still written back as is."""
    _, path = _recorded(tmp_path)
    document = json.loads(path.read_text())
    t = trae.trae_to_trajectory({k: v for k, v in document.items() if k != "cohort"})
    t.extra_json = json.dumps({"cohort": document["cohort"]}, ensure_ascii=False)
    assert trae.dumps_trae(trae.trajectory_to_trae(t)) == path.read_text()


def test_a_plain_trae_file_gets_no_block() -> None:
    document = json.loads((Path(__file__).parent.parent / "data" / "trae_seed_example.json").read_text())
    assert "cohort" not in trae.trajectory_to_trae(trae.trae_to_trajectory(document))


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ("my-agent", "cohort"),
        ({"agent": "my-agent"}, "cohort.agent"),
        ({"labels": ["split"]}, "cohort.labels"),
        ({"iteration": "twelve"}, "cohort.iteration"),
        ({"iteration": True}, "cohort.iteration"),
        ({"termination_reason": "exploded"}, "cohort.termination_reason"),
        ({"outcome": {"kind": "great"}}, "cohort.outcome"),
        ({"decisions": {"head": "x"}}, "cohort.decisions"),
        ({"decisions": [{"head": "x"}, {"head": "y", "log_prob": "likely"}]}, "cohort.decisions[1]"),
        ({"decisions": [{"head": "x", "policy": 5}]}, "cohort.decisions[0].policy"),
        ({"total_usage": {"input_tokens": "many"}}, "cohort.total_usage"),
    ],
)
def test_a_malformed_block_names_its_key(block, field) -> None:
    with pytest.raises(InvalidArgument) as caught:
        trae.trae_to_trajectory({"task": "t", "cohort": block})
    assert caught.value.field == field


def test_a_malformed_block_in_a_file_names_the_item(tmp_path: Path) -> None:
    path = tmp_path / "many.json"
    path.write_text(json.dumps([{"task": "fine"}, {"task": "bad", "cohort": {"agent": 3}}]))
    with pytest.raises(InvalidArgument) as caught:
        trae.load_trae_file(path)
    assert caught.value.field == "[1].cohort.agent"
    assert str(path) in caught.value.description
