"""The memory recorder builds its `Trajectory` directly (`build_recorded`): the same message, field
for field, as the file recorder's final trajectory (and `load_recorded` of its file) for the same
events, on the recorder's own shapes (the fast path) and on unusual ones (the reference readers)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from trae_types import LLMMessage, LLMResponse, LLMUsage, Tool, ToolCall, ToolResult

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk import TrajectoryRecorder, load_recorded, toolbench
from cohort.sdk import journal as journal_module
from cohort.sdk import recorder as recorder_module
from cohort.sdk.journal import COHORT_KEY, build_recorded
from cohort.sdk.runtime import AgentContext

MODEL = "test-model"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Every recorder reads the same sequence of instants: restart it before each recording."""
    state: dict[str, Iterator[datetime]] = {}

    def restart(start: datetime) -> None:
        state["ticks"] = (start + timedelta(microseconds=1_234_567 * i) for i in range(10**6))

    restart(datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC))
    monkeypatch.setattr(recorder_module, "utc_now", lambda: next(state["ticks"]))
    return restart


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Field-by-field differences of two messages (set fields, recursively), for a readable failure."""
    if a.DESCRIPTOR is not b.DESCRIPTOR:
        return [f"{path}: {a.DESCRIPTOR.full_name} vs {b.DESCRIPTOR.full_name}"]
    out = []
    names = {f.name for f, _ in a.ListFields()} | {f.name for f, _ in b.ListFields()}
    for name in sorted(names):
        field = a.DESCRIPTOR.fields_by_name[name]
        left, right = getattr(a, name), getattr(b, name)
        where = f"{path}.{name}" if path else name
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            if field.is_repeated:
                if len(left) != len(right):
                    out.append(f"{where}: {len(left)} vs {len(right)} items")
                    continue
                for i, (x, y) in enumerate(zip(left, right, strict=True)):
                    out.extend(_differences(x, y, f"{where}[{i}]"))
            else:
                if a.HasField(name) != b.HasField(name):
                    out.append(f"{where}: set {a.HasField(name)} vs {b.HasField(name)}")
                out.extend(_differences(left, right, where))
        elif (list(left) if field.is_repeated else left) != (list(right) if field.is_repeated else right):
            out.append(f"{where}: {left!r} vs {right!r}")
        elif field.has_presence and a.HasField(name) != b.HasField(name):
            out.append(f"{where}: presence {a.HasField(name)} vs {b.HasField(name)}")
    return out


def _assert_same(memory: trajectory_pb2.Trajectory, reference: trajectory_pb2.Trajectory) -> None:
    assert _differences(memory, reference) == []
    assert memory == reference
    assert memory.SerializeToString(deterministic=True) == reference.SerializeToString(deterministic=True)


def _record_both(
    tmp_path: Path,
    clock: Callable[[datetime], None],
    script: Callable[[TrajectoryRecorder], None],
    start: datetime = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC),
) -> tuple[TrajectoryRecorder, TrajectoryRecorder]:
    identity = {
        "trajectory_id": "traj-1",
        "agent_name": "agent",
        "agent_version": "2",
        "labels": {"k": "v"},
        "job_id": "job",
        "group_id": "group",
        "iteration": 3,
        "query_id": "q1",
    }
    clock(start)
    file_recorder = TrajectoryRecorder(tmp_path / "run.json", sink="file", **identity)
    script(file_recorder)
    clock(start)
    memory_recorder = TrajectoryRecorder(sink="memory", **identity)
    script(memory_recorder)
    return file_recorder, memory_recorder


def _check(file_recorder: TrajectoryRecorder, memory_recorder: TrajectoryRecorder, tmp_path: Path) -> None:
    assert file_recorder.trajectory is not None
    assert memory_recorder.trajectory is not None
    _assert_same(memory_recorder.trajectory, file_recorder.trajectory)
    document = json.loads((tmp_path / "run.json").read_text())
    from_file = load_recorded(document)
    if not memory_recorder.trajectory.HasField("total_usage"):
        # The file's `cohort` section always spells `total_usage` (all null for a run without calls),
        # which marks the field set when read back: a property of the file, not of the recorder.
        assert from_file.total_usage == trajectory_pb2.TokenUsage()
        from_file.ClearField("total_usage")
    _assert_same(memory_recorder.trajectory, from_file)


def trae_style(recorder: TrajectoryRecorder, *, steps: int = 3, secret: str = "") -> None:
    """Trae objects: each step an LLM call, a decision, a tool call and its result; a final outcome."""
    tools = [Tool("bash"), Tool("task_done")]
    recorder.start_recording("Create hello.py", "anthropic", MODEL, 10)
    messages = [LLMMessage("system", "You are an engineer."), LLMMessage("user", f"Create hello.py {secret}")]
    for step in range(1, steps + 1):
        last = step == steps
        call = ToolCall("task_done" if last else "bash", f"call_{step}", {"command": f"echo {step}"})
        response = LLMResponse(
            f"step {step}",
            LLMUsage(100 * step, 10 * step, cache_read_input_tokens=50),
            MODEL,
            "tool_use",
            [call],
        )
        result = ToolResult(call.call_id, call.name, True, f"ok {step}")
        recorder.record_llm_interaction(messages, response, "anthropic", MODEL, tools)
        recorder.record_decision(
            "next_tool",
            ["bash", "task_done"],
            1 if last else 0,
            -0.25,
            features={"step": float(step)},
            probabilities=[0.78, 0.22],
            policy_id="pol-1",
            policy_version=4,
        )
        recorder.record_agent_step(
            step, "completed" if last else "calling_tool", messages, response, [call], [result]
        )
        messages = [LLMMessage("user", tool_result=result)]
    recorder.set_outcome("success", 0.9, ["tests pass"])
    recorder.finalize_recording(True, "done")


def test_trae_style_run(tmp_path: Path, clock) -> None:
    _check(*_record_both(tmp_path, clock, trae_style), tmp_path)


def test_the_recorders_own_shapes_take_the_fast_path(monkeypatch: pytest.MonkeyPatch, clock) -> None:
    """Not trivially equal: the memory recorder does not fall back to `load_recorded` here."""

    def refuse(document: Any) -> None:
        raise AssertionError("load_recorded called")

    monkeypatch.setattr(journal_module, "load_recorded", refuse)
    recorder = TrajectoryRecorder(sink="memory", trajectory_id="x")
    trae_style(recorder)
    assert recorder.trajectory is not None
    assert len(recorder.trajectory.agent_steps) == 3


def test_a_secret_is_redacted_the_same_way(tmp_path: Path, clock) -> None:
    secret = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"
    file_recorder, memory_recorder = _record_both(tmp_path, clock, lambda r: trae_style(r, secret=secret))
    _check(file_recorder, memory_recorder, tmp_path)
    assert secret not in memory_recorder.trajectory.SerializeToString().decode("utf-8", "replace")


def unusual_shapes(recorder: TrajectoryRecorder) -> None:
    """Dicts the fast path hands to the reference readers: extra keys, OpenAI shapes, lists, nulls."""
    recorder.start_recording("odd task", "openai", MODEL, None)
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "parts"}]},
        {"role": "user", "content": "hi", "cache": True, "name": "alice"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c9", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "r", "tool_call_id": "c9"},
    ]
    response = {
        "content": "x",
        "model": MODEL,
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "tier": "gold"},
        "tool_calls": [{"call_id": "c1", "name": "f", "arguments": "not json", "id": "p1", "extra": [1, 2]}],
        "provider_field": {"a": 1},
    }
    recorder.record_llm_interaction(messages, response, "openai", MODEL, None)
    recorder.record_agent_step(1, "thinking", messages, dict(response), reflection="hmm")  # a copy: converted
    recorder.record_llm_interaction(
        [], {"content": None, "usage": None, "tool_calls": []}, "openai", MODEL, []
    )
    recorder.record_agent_step(2, "error", None, None, None, None, error="boom")
    recorder.record_agent_step(
        3,
        "calling_tool",
        [{"role": "user", "content": "q", "tool_call": None}],
        {"content": "y", "model": None, "finish_reason": None, "usage": None, "tool_calls": None},
        [{"call_id": "c2", "name": "g", "arguments": {"b": 2, "a": [1, "é"]}}],
        [{"call_id": "c2", "success": False, "result": None, "error": "bad", "id": None, "code": 3}],
    )
    recorder.set_termination("error", "stopped")
    recorder.finalize_recording(False)


def test_unusual_shapes(tmp_path: Path, clock) -> None:
    _check(*_record_both(tmp_path, clock, unusual_shapes), tmp_path)


def _naive(value: Any) -> Any:
    """A recorded value with every `+00:00` timestamp spelled without an offset (as Trae writes)."""
    if isinstance(value, str) and value.endswith("+00:00") and value[:4].isdigit():
        return value.removesuffix("+00:00")
    if isinstance(value, dict):
        return {key: _naive(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_naive(item) for item in value]
    return value


def test_naive_and_odd_timestamps_take_the_reference_path(clock) -> None:
    recorder = TrajectoryRecorder(sink="memory", trajectory_id="x")
    trae_style(recorder)
    state = recorder._state
    naive = _naive(state.trae)
    _assert_same(build_recorded(naive, state.cohort), load_recorded({**naive, COHORT_KEY: state.cohort}))
    zulu = dict(state.trae, end_time=state.trae["end_time"].replace("+00:00", "Z"))
    _assert_same(build_recorded(zulu, state.cohort), load_recorded({**zulu, COHORT_KEY: state.cohort}))
    odd = dict(state.trae)  # canonical at the top, odd inside: per-object reference readers
    odd["agent_steps"] = [dict(step, timestamp=step["timestamp"][:19]) for step in odd["agent_steps"]]
    odd["llm_interactions"] = [dict(x, timestamp="") for x in odd["llm_interactions"]]
    built = build_recorded(odd, state.cohort)
    _assert_same(built, load_recorded({**odd, COHORT_KEY: state.cohort}))
    assert "__cohort_trae" in built.llm_interactions[0].extra_json  # the hint is there: not trivially equal


def test_a_tool_call_without_an_id_fails_in_both_modes(tmp_path: Path, clock) -> None:
    def script(recorder: TrajectoryRecorder) -> None:
        recorder.start_recording("t", "p", MODEL, 3)
        call = {"name": "f", "arguments": {}}  # no call_id and no id: Trae's `call_id` must be a string
        recorder.record_agent_step(1, "calling_tool", tool_calls=[call])
        recorder.finalize_recording(False)

    file_recorder, memory_recorder = _record_both(tmp_path, clock, script)
    assert file_recorder.trajectory is None
    assert memory_recorder.trajectory is None


def test_unfinished_and_empty_recordings(tmp_path: Path, clock) -> None:
    def script(recorder: TrajectoryRecorder) -> None:
        with recorder:
            recorder.start_recording("t", "p", MODEL, 0)

    _check(*_record_both(tmp_path, clock, script), tmp_path)


async def test_toolbench_rollouts(tmp_path: Path, clock) -> None:
    """The toolbench agent's own recording (the collector's hot path), on a few queries and seeds."""
    agent = toolbench.make_agent(toolbench.ToolbenchOptions(tokens_per_step=40))
    decider = toolbench.uniform_decider()
    for i, query in enumerate(toolbench.generate_queries("train", 6, seed=3)):
        task = toolbench.task_from_query(query)
        recorders = []
        for sink in ("file", "memory"):
            clock(datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC))
            path = tmp_path / f"run-{i}.json"
            recorder = TrajectoryRecorder(path if sink == "file" else None, sink=sink, trajectory_id=f"t{i}")
            recorder.start_recording(task.text, "toolbench", "toolbench-sim", None)
            result = await agent(task, AgentContext(task, decider=decider, recorder=recorder, seed=i))
            recorder.set_termination(result.termination, result.detail)
            recorder.finalize_recording(bool(result.success), result.final_result)
            recorders.append(recorder)
        file_recorder, memory_recorder = recorders
        assert len(memory_recorder.trajectory.agent_steps) >= 1
        _assert_same(memory_recorder.trajectory, file_recorder.trajectory)


def test_build_recorded_equals_load_recorded_on_the_live_state(clock) -> None:
    recorder = TrajectoryRecorder(sink="memory", trajectory_id="x")
    unusual_shapes(recorder)
    state = recorder._state
    _assert_same(
        build_recorded(state.trae, state.cohort), load_recorded({**state.trae, COHORT_KEY: state.cohort})
    )


def test_only_a_memory_recording_may_leave_redaction_to_its_caller(tmp_path):
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2"
    with pytest.raises(InvalidArgument) as caught:
        TrajectoryRecorder(tmp_path / "t.json", sink="file", redact=False)
    assert caught.value.field == "redact"
    kept = TrajectoryRecorder(sink="memory", redact=False)
    redacted = TrajectoryRecorder(sink="memory")
    for recorder in (kept, redacted):
        recorder.start_recording(f"use {secret}", "p", "m", 3)
        recorder.finalize_recording(True, f"done with {secret}")
    assert kept.trajectory.final_result == f"done with {secret}"  # the caller redacts it
    assert secret not in str(redacted.trajectory)
