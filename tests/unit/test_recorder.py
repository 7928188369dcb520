"""The recorder SDK: Trae document shape, redaction, atomicity, recovery, decorator, collector sink."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from trae_types import LLMMessage, LLMResponse, LLMUsage, Tool, ToolCall, ToolResult

from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk import (
    CollectorSink,
    JournalInUse,
    TrajectoryRecorder,
    load_recorded,
    record_agent,
    recover_journal,
    recover_path,
)
from cohort.sdk.journal import TRAE_KEYS
from cohort.sdk.trajectories.trae import dumps_trae, trae_to_trajectory
from cohort.sdk.trajectories.usage import PriceTable

TR = trajectory_pb2.TerminationReason

MODEL = "test-model"
PRICES = {"models": {MODEL: {"input": 2, "output": 10, "cache_read": 1}}}
TOOLS = [Tool("bash"), Tool("str_replace_based_edit_tool"), Tool("task_done")]


def price_table(tmp_path: Path) -> PriceTable:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICES))
    return PriceTable.load(path)


def scripted_run(recorder: TrajectoryRecorder, *, steps: int = 3, secret: str = "") -> None:
    """A Trae-style agent: each step one LLM call, one decision, one tool call and its result."""
    recorder.start_recording("Create hello.py", "anthropic", MODEL, 10)
    messages = [LLMMessage("system", "You are a helpful engineer."), LLMMessage("user", "Create hello.py")]
    for step in range(1, steps + 1):
        last = step == steps
        name = "task_done" if last else "bash"
        call = ToolCall(name, f"call_{step}", {"command": f"echo {step} {secret}".strip()})
        response = LLMResponse(
            f"step {step}",
            LLMUsage(100 * step, 10 * step, cache_read_input_tokens=50),
            MODEL,
            "tool_use",
            [call],
        )
        result = ToolResult(call.call_id, name, True, f"ok {step}")
        recorder.record_llm_interaction(messages, response, "anthropic", MODEL, TOOLS)
        recorder.record_decision(
            "next_tool",
            ["bash", "str_replace_based_edit_tool", "task_done"],
            2 if last else 0,
            -0.25,
            features={"step": float(step)},
            probabilities=[0.7, 0.1, 0.2] if not last else [0.1, 0.1, 0.8],
            policy_id="pol-1",
            policy_version=4,
        )
        recorder.record_agent_step(
            step, "completed" if last else "calling_tool", messages, response, [call], [result]
        )
        messages = [LLMMessage("user", tool_result=result)]


# --------------------------------------------------------------------------------------------------
# The recorded file


INTERACTION_KEYS = ["timestamp", "provider", "model", "input_messages", "response", "tools_available"]
RESPONSE_KEYS = ["content", "model", "finish_reason", "usage", "tool_calls"]
USAGE_KEYS = [
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "reasoning_tokens",
]
STEP_KEYS = [
    "step_number",
    "timestamp",
    "state",
    "llm_messages",
    "llm_response",
    "tool_calls",
    "tool_results",
    "reflection",
    "error",
]
COHORT_KEYS = [
    "trajectory_id",
    "agent",
    "labels",
    "job_id",
    "group_id",
    "iteration",
    "query_id",
    "policy",
    "decisions",
    "termination_reason",
    "termination_detail",
    "outcome",
    "total_usage",
    "cost_micro_usd",
]


def test_three_step_run_writes_the_trae_document(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    recorder = TrajectoryRecorder(
        path,
        prices=price_table(tmp_path),
        agent_name="demo-agent",
        agent_version="1.2.3",
        labels={"split": "train"},
        trajectory_id="traj-0001",
    )
    scripted_run(recorder)
    assert recorder.journal_path.exists()
    assert recorder.finalize_recording(True, "hello.py created") == path

    assert not recorder.journal_path.exists()
    text = path.read_text(encoding="utf-8")
    doc = json.loads(text)
    assert text == dumps_trae(doc)  # Trae's writer style
    assert list(doc) == [*TRAE_KEYS, "cohort"]
    assert doc["task"] == "Create hello.py"
    assert (doc["provider"], doc["model"], doc["max_steps"]) == ("anthropic", MODEL, 10)
    assert doc["success"] is True and doc["final_result"] == "hello.py created"
    assert isinstance(doc["execution_time"], float) and doc["execution_time"] >= 0
    assert doc["start_time"].endswith("+00:00") and doc["end_time"] >= doc["start_time"]

    assert len(doc["llm_interactions"]) == 3 and len(doc["agent_steps"]) == 3
    first = doc["llm_interactions"][0]
    assert list(first) == INTERACTION_KEYS
    assert first["tools_available"] == ["bash", "str_replace_based_edit_tool", "task_done"]
    assert first["input_messages"] == [
        {"role": "system", "content": "You are a helpful engineer."},
        {"role": "user", "content": "Create hello.py"},
    ]
    assert list(first["response"]) == RESPONSE_KEYS
    assert list(first["response"]["usage"]) == USAGE_KEYS
    assert first["response"]["usage"] == {
        "input_tokens": 100,
        "output_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 50,
        "reasoning_tokens": None,
    }
    assert first["response"]["tool_calls"] == [
        {"call_id": "call_1", "name": "bash", "arguments": {"command": "echo 1"}, "id": None}
    ]
    second_input = doc["llm_interactions"][1]["input_messages"]
    assert second_input == [
        {
            "role": "user",
            "content": None,
            "tool_result": {
                "call_id": "call_1",
                "success": True,
                "result": "ok 1",
                "error": None,
                "id": None,
            },
        }
    ]
    step = doc["agent_steps"][2]
    assert list(step) == STEP_KEYS
    assert (step["step_number"], step["state"]) == (3, "completed")
    assert step["llm_response"] == doc["llm_interactions"][2]["response"]
    assert step["tool_results"] == [
        {"call_id": "call_3", "success": True, "result": "ok 3", "error": None, "id": None}
    ]
    assert step["reflection"] is None and step["error"] is None

    cohort = doc["cohort"]
    assert list(cohort) == COHORT_KEYS
    assert cohort["trajectory_id"] == "traj-0001"
    assert cohort["agent"] == {"name": "demo-agent", "version": "1.2.3"}
    assert cohort["labels"] == {"split": "train"}
    assert cohort["policy"] == {"policy_id": "pol-1", "version": 4}
    assert cohort["termination_reason"] == "TERMINATION_REASON_COMPLETED"
    assert [d["chosen"] for d in cohort["decisions"]] == ["bash", "bash", "task_done"]
    assert [d["step_number"] for d in cohort["decisions"]] == [1, 2, 3]
    assert cohort["decisions"][0]["log_prob"] == -0.25
    assert cohort["decisions"][0]["features"] == {"step": 1.0}
    # Usage summed over the three calls: input 100+200+300, output 10+20+30, cache reads 3 x 50.
    assert cohort["total_usage"] == {
        "input_tokens": 600,
        "output_tokens": 60,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 150,
        "reasoning_tokens": None,
    }
    # USD per million tokens = micro-USD per token: 600*2 + 60*10 + 150*1.
    assert cohort["cost_micro_usd"] == 1950

    # The Trae converter reads it back, the `cohort` block into the fields, not as opaque text.
    plain = trae_to_trajectory(doc)
    assert len(plain.llm_interactions) == 3 and len(plain.agent_steps) == 3
    assert "traj-0001" not in plain.extra_json and plain.trajectory_id == "traj-0001"
    assert plain == recorder.trajectory
    full = load_recorded(doc)
    assert full.trajectory_id == "traj-0001" and full.agent.name == "demo-agent"
    assert full.termination_reason == TR.TERMINATION_REASON_COMPLETED
    assert len(full.decisions) == 3 and full.decisions[2].chosen == "task_done"
    assert full.cost_micro_usd == 1950 and full.total_usage.input_tokens == 600
    assert full == recorder.trajectory


def test_dicts_and_trae_objects_give_the_same_document(tmp_path: Path) -> None:
    as_objects = TrajectoryRecorder(tmp_path / "objects.json", trajectory_id="same")
    as_dicts = TrajectoryRecorder(tmp_path / "dicts.json", trajectory_id="same")
    call = ToolCall("bash", "c1", {"command": "ls"})
    as_objects.record_llm_interaction(
        [LLMMessage("user", "list files")],
        LLMResponse("ok", LLMUsage(5, 2), MODEL, "tool_use", [call]),
        "openai",
        MODEL,
        [Tool("bash")],
    )
    as_dicts.record_llm_interaction(
        [{"role": "user", "content": "list files"}],
        {
            "content": "ok",
            "model": MODEL,
            "finish_reason": "tool_use",
            "usage": {
                "prompt_tokens": 5,
                "completion_tokens": 2,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
            # OpenAI's shape: converted to Trae's.
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "bash", "arguments": '{"command": "ls"}'},
                }
            ],
        },
        "openai",
        MODEL,
        [{"type": "function", "function": {"name": "bash"}}],
    )
    objects = as_objects.trajectory_data["llm_interactions"][0]
    dicts = as_dicts.trajectory_data["llm_interactions"][0]
    objects.pop("timestamp"), dicts.pop("timestamp")
    dicts["response"]["tool_calls"][0]["id"] = None  # OpenAI's id is kept as Trae's `id` as well
    assert objects == dicts
    for recorder in (as_objects, as_dicts):
        recorder.finalize_recording(True)


def test_decision_and_outcome_are_validated(tmp_path: Path) -> None:
    recorder = TrajectoryRecorder(tmp_path / "v.json")
    with pytest.raises(InvalidArgument) as exc:
        recorder.record_decision("next_tool", ["a", "b"], 2, -0.1)
    assert exc.value.field == "chosen_index"
    with pytest.raises(InvalidArgument):
        recorder.record_decision("next_tool", ["a", "b"], 0, 0.5)  # not a log-probability
    with pytest.raises(InvalidArgument):
        recorder.record_decision("next_tool", ["a", "b"], 0, -0.1, probabilities=[1.0])
    with pytest.raises(InvalidArgument):
        recorder.set_outcome("great")
    with pytest.raises(InvalidArgument):
        recorder.set_termination("exploded")
    recorder.set_outcome("partial", 0.5, ["2 of 4 tests pass"])
    recorder.set_termination("budget_exhausted", "token budget")
    recorder.finalize_recording(False)
    cohort = json.loads((tmp_path / "v.json").read_text())["cohort"]
    assert cohort["outcome"] == {
        "kind": "OUTCOME_KIND_PARTIAL",
        "score": 0.5,
        "confidence": 1.0,
        "reasons": ["2 of 4 tests pass"],
        "inferred": False,
    }
    assert cohort["termination_reason"] == "TERMINATION_REASON_BUDGET_EXHAUSTED"
    assert cohort["termination_detail"] == "token budget"


def test_failed_run_at_the_step_limit_is_max_steps(tmp_path: Path) -> None:
    recorder = TrajectoryRecorder(tmp_path / "m.json")
    recorder.start_recording("t", "p", MODEL, 2)
    recorder.record_agent_step(1, "thinking")
    recorder.record_agent_step(2, "thinking")
    recorder.finalize_recording(False, "ran out of steps")
    assert load_recorded(json.loads((tmp_path / "m.json").read_text())).termination_reason == (
        TR.TERMINATION_REASON_MAX_STEPS
    )


def test_default_path_is_timestamped_and_unique(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = TrajectoryRecorder(), TrajectoryRecorder()
    first.start_recording("a", "p", MODEL, 1)
    second.start_recording("b", "p", MODEL, 1)
    assert first.trajectory_path.parent == Path("trajectories")
    assert first.trajectory_path.name.startswith("trajectory_") and first.trajectory_path.suffix == ".json"
    first.finalize_recording(True)
    third = TrajectoryRecorder()  # the same second: the name is taken, a suffix is added
    assert third.trajectory_path != first.trajectory_path
    second.finalize_recording(True)


# --------------------------------------------------------------------------------------------------
# Secrets

SECRETS = {
    "openai": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    "bearer": "Bearer zq8Lm3Np6Rt9Vx2Bc5Df8Gh1Jk4",
    "url": "postgres://admin:hunter2hunter2@db.internal:5432/prod",
    "github": "ghp_0123456789abcdefghijABCDEFGHIJ012345",
}
SECRET_VALUES = [
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    "zq8Lm3Np6Rt9Vx2Bc5Df8Gh1Jk4",
    "hunter2hunter2",
    "ghp_0123456789abcdefghijABCDEFGHIJ012345",
]


def assert_no_secret(data: bytes) -> None:
    for secret in SECRET_VALUES:
        assert secret.encode() not in data, secret
    assert b"[REDACTED:" in data


def test_secrets_never_reach_the_journal_or_the_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    recorder = TrajectoryRecorder(path, labels={"source": SECRETS["url"]})
    recorder.start_recording(f"deploy with {SECRETS['openai']}", "openai", MODEL, 5)
    call = ToolCall(
        "bash", "c1", {"command": f"curl -H 'Authorization: {SECRETS['bearer']}' x", "env": SECRETS}
    )
    messages = [LLMMessage("user", f"my key is {SECRETS['openai']} and db {SECRETS['url']}")]
    response = LLMResponse(f"using {SECRETS['github']}", LLMUsage(1, 1), MODEL, "tool_use", [call])
    recorder.record_llm_interaction(messages, response, "openai", MODEL)
    recorder.record_agent_step(
        1,
        "calling_tool",
        messages,
        response,
        tool_calls=[call],
        tool_results=[{"call_id": "c1", "success": False, "error": f"denied for {SECRETS['bearer']}"}],
        reflection=f"retry with {SECRETS['github']}",
    )
    journal = recorder.journal_path.read_bytes()
    assert_no_secret(journal)
    for secret in SECRET_VALUES:  # ...and not in what the recorder keeps in memory either
        assert secret not in json.dumps(recorder.trajectory_data)
    recorder.finalize_recording(False, f"failed: {SECRETS['url']}")
    assert_no_secret(path.read_bytes())
    step = json.loads(path.read_text())["agent_steps"][0]
    assert step["llm_messages"][0]["content"].startswith("my key is [REDACTED:openai_api_key:")
    assert recorder.trajectory is not None
    assert_no_secret(recorder.trajectory.SerializeToString())


# --------------------------------------------------------------------------------------------------
# Atomicity and recovery


def test_crash_between_temp_write_and_rename_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "atomic.json"
    recorder = TrajectoryRecorder(path, prices=price_table(tmp_path))
    scripted_run(recorder)

    def crash(src, dst):  # noqa: ANN001
        raise OSError("simulated crash before rename")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crash)
        assert recorder.finalize_recording(True, "done") is None
    assert not path.exists()
    assert recorder.journal_path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.json.journal", "prices.json"]

    assert recover_journal(recorder.journal_path, prices=price_table(tmp_path)) == path
    doc = json.loads(path.read_text())
    # The finalize event was journaled: the recovered file is the finished run, not a crash.
    assert doc["success"] is True and doc["final_result"] == "done"
    assert doc["cohort"]["termination_reason"] == "TERMINATION_REASON_COMPLETED"
    assert doc["cohort"]["cost_micro_usd"] == 1950
    assert len(doc["agent_steps"]) == 3
    assert not recorder.journal_path.exists()


def test_recover_a_journal_without_finalize(tmp_path: Path) -> None:
    path = tmp_path / "crashed.json"
    recorder = TrajectoryRecorder(path, agent_name="a")
    scripted_run(recorder, steps=2)
    journal = recorder.journal_path
    recorder._journal.close()  # the process "dies": its lock goes with it
    with journal.open("ab") as handle:
        handle.write(b'{"event":"step","time":"2025-01-01T00:00:00+00:00","data":{"step_nu')  # torn
    stale_temp = tmp_path / ".crashed.json.abc123.tmp"
    stale_temp.write_text("{half")

    assert recover_journal(journal) == path
    doc = json.loads(path.read_text())
    assert len(doc["agent_steps"]) == 2 and doc["success"] is False
    assert doc["cohort"]["termination_reason"] == "TERMINATION_REASON_CRASHED"
    assert "1 unreadable line" in doc["cohort"]["termination_detail"]
    assert doc["cohort"]["agent"]["name"] == "a"
    assert doc["cohort"]["outcome"]["kind"] == "OUTCOME_KIND_FAILURE" and doc["cohort"]["outcome"]["inferred"]
    assert doc["agent_steps"][1]["llm_response"] == doc["llm_interactions"][1]["response"]
    assert load_recorded(doc).termination_reason == TR.TERMINATION_REASON_CRASHED
    assert not journal.exists() and not stale_temp.exists()

    before = (path.read_bytes(), path.stat().st_mtime_ns)
    assert recover_journal(journal) == path  # idempotent
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_a_live_journal_is_not_recovered(tmp_path: Path) -> None:
    recorder = TrajectoryRecorder(tmp_path / "live.json")
    recorder.start_recording("t", "p", MODEL, 3)
    with pytest.raises(JournalInUse):
        recover_journal(recorder.journal_path)
    assert recover_path(tmp_path) == []  # skipped, not marked crashed
    recorder.finalize_recording(True)
    assert (tmp_path / "live.json").exists()


def test_recover_path_recovers_a_directory(tmp_path: Path) -> None:
    for name in ("a", "b"):
        recorder = TrajectoryRecorder(tmp_path / f"{name}.json")
        recorder.start_recording(name, "p", MODEL, 3)
        recorder._journal.close()
    assert sorted(p.name for p in recover_path(tmp_path)) == ["a.json", "b.json"]
    assert not list(tmp_path.glob("*.journal"))
    assert recover_path(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# Context managers and the decorator


def test_context_manager_records_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "ctx.json"
    with pytest.raises(ValueError, match="boom"), TrajectoryRecorder(path) as recorder:
        recorder.start_recording("t", "p", MODEL, 3)
        raise ValueError("boom")
    doc = json.loads(path.read_text())
    assert doc["success"] is False
    assert doc["cohort"]["termination_reason"] == "TERMINATION_REASON_ERROR"
    assert doc["cohort"]["termination_detail"] == "ValueError: boom"


def test_context_manager_without_finalize_is_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "ctx.json"
    with TrajectoryRecorder(path) as recorder:
        recorder.start_recording("t", "p", MODEL, 3)
    doc = json.loads(path.read_text())
    assert doc["success"] is False
    assert doc["cohort"]["termination_reason"] == "TERMINATION_REASON_ERROR"
    assert "without finalize_recording" in doc["cohort"]["termination_detail"]


async def test_async_context_manager_timeout(tmp_path: Path) -> None:
    path = tmp_path / "actx.json"
    with pytest.raises(TimeoutError):
        async with TrajectoryRecorder(path) as recorder:
            recorder.start_recording("t", "p", MODEL, 3)
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
    assert json.loads(path.read_text())["cohort"]["termination_reason"] == "TERMINATION_REASON_TIMEOUT"


def only_file(directory: Path) -> dict:
    files = list(directory.glob("*.json"))
    assert len(files) == 1, files
    assert not list(directory.glob("*.journal"))
    return json.loads(files[0].read_text())


async def test_record_agent_success(tmp_path: Path) -> None:
    @record_agent(provider="anthropic", model=MODEL, max_steps=5, trajectory_dir=tmp_path, agent_name="deco")
    async def agent(task: str, recorder: TrajectoryRecorder, *, bonus: int = 0) -> dict:
        recorder.record_agent_step(1, "completed", reflection=f"bonus {bonus}")
        return {"success": True, "final_result": f"did {task}"}

    assert await agent("the task", bonus=7) == {"success": True, "final_result": "did the task"}
    doc = only_file(tmp_path)
    assert doc["task"] == "the task" and doc["model"] == MODEL and doc["max_steps"] == 5
    assert doc["success"] is True and doc["final_result"] == "did the task"
    assert doc["agent_steps"][0]["reflection"] == "bonus 7"
    assert doc["cohort"]["termination_reason"] == "TERMINATION_REASON_COMPLETED"
    assert doc["cohort"]["agent"]["name"] == "deco"


async def test_record_agent_with_a_context_and_an_object_result(tmp_path: Path) -> None:
    @dataclass
    class Context:
        recorder: TrajectoryRecorder | None = None

    @dataclass
    class Result:
        success: bool
        final_result: str

    @record_agent(trajectory_dir=tmp_path)
    async def agent(task: str, context: Context) -> Result:
        context.recorder.record_agent_step(1, "thinking")
        return Result(False, "gave up")

    context = Context()
    assert await agent("t", context) == Result(False, "gave up")
    assert context.recorder is not None and context.recorder.finalized
    doc = only_file(tmp_path)
    assert doc["success"] is False and doc["final_result"] == "gave up"


async def test_record_agent_exception(tmp_path: Path) -> None:
    @record_agent(trajectory_dir=tmp_path)
    async def agent(task: str, recorder: TrajectoryRecorder) -> bool:
        recorder.record_agent_step(1, "error", error="tool crashed")
        raise RuntimeError("tool crashed")

    with pytest.raises(RuntimeError, match="tool crashed"):
        await agent("t")
    doc = only_file(tmp_path)
    assert doc["success"] is False
    assert doc["cohort"]["termination_reason"] == "TERMINATION_REASON_ERROR"
    assert doc["cohort"]["termination_detail"] == "RuntimeError: tool crashed"


async def test_record_agent_cancellation(tmp_path: Path) -> None:
    started = asyncio.Event()

    @record_agent(trajectory_dir=tmp_path)
    async def agent(task: str, recorder: TrajectoryRecorder) -> bool:
        recorder.record_agent_step(1, "thinking")
        started.set()
        await asyncio.sleep(60)
        return True

    task = asyncio.create_task(agent("t"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    doc = only_file(tmp_path)
    assert doc["success"] is False and len(doc["agent_steps"]) == 1
    assert doc["cohort"]["termination_reason"] == "TERMINATION_REASON_CANCELLED"


async def test_record_agent_timeout(tmp_path: Path) -> None:
    @record_agent(trajectory_dir=tmp_path, timeout=0.05)
    async def agent(task: str, recorder: TrajectoryRecorder) -> bool:
        await asyncio.sleep(60)
        return True

    with pytest.raises(TimeoutError):
        await agent("t")
    doc = only_file(tmp_path)
    assert doc["cohort"]["termination_reason"] == "TERMINATION_REASON_TIMEOUT"
    assert doc["success"] is False


async def test_record_agent_uses_a_recorder_the_caller_passes(tmp_path: Path) -> None:
    @record_agent(trajectory_dir=tmp_path / "unused")
    async def agent(task: str, recorder: TrajectoryRecorder) -> bool:
        return True

    recorder = TrajectoryRecorder(tmp_path / "mine.json")
    assert await agent("t", recorder=recorder) is True
    assert json.loads((tmp_path / "mine.json").read_text())["success"] is True
    assert not (tmp_path / "unused").exists()


# --------------------------------------------------------------------------------------------------
# CollectorSink, against a fake collector (the peer, not the thing under test)


class FakeCollector(collector_pb2_grpc.CollectorServiceServicer):
    def __init__(self, delay: float = 0.0, reject_ids: tuple[str, ...] = ()) -> None:
        self.delay = delay
        self.reject_ids = reject_ids
        self.streams: list[list[trajectory_pb2.Trajectory]] = []

    async def IngestTrajectories(self, request_iterator, context):  # noqa: N802, ANN001
        items = [request.trajectory async for request in request_iterator]
        if self.delay:
            await asyncio.sleep(self.delay)
        self.streams.append(items)
        response = collector_pb2.IngestTrajectoriesResponse()
        for index, item in enumerate(items):
            if item.trajectory_id in self.reject_ids:
                failure = response.failures.add(index=index, trajectory_id=item.trajectory_id)
                failure.status.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
                failure.status.message = "rejected by the fake"
            else:
                response.stored_count += 1
                response.trajectory_ids.append(item.trajectory_id)
        return response


@pytest.fixture
async def collector():
    fake = FakeCollector()
    server = grpc.aio.server()
    collector_pb2_grpc.add_CollectorServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield fake, channel
    finally:
        await channel.close()
        await server.stop(0)


def trajectory(i: int) -> trajectory_pb2.Trajectory:
    return trajectory_pb2.Trajectory(trajectory_id=f"t{i}", task=f"task {i}")


async def test_collector_sink_sends_in_batches(collector) -> None:
    fake, channel = collector
    sink = CollectorSink(channel, batch_size=4, flush_interval=0.05)
    for i in range(10):
        sink.submit(trajectory(i))
    await sink.aclose()
    assert [len(stream) for stream in fake.streams] == [4, 4, 2]
    assert [t.trajectory_id for stream in fake.streams for t in stream] == [f"t{i}" for i in range(10)]
    assert (sink.sent, sink.failed) == (10, 0)


async def test_collector_sink_flushes_a_partial_batch_after_the_interval(collector) -> None:
    fake, channel = collector
    sink = CollectorSink(channel, batch_size=64, flush_interval=0.05)
    sink.submit(trajectory(1))
    for _ in range(100):
        if fake.streams:
            break
        await asyncio.sleep(0.02)
    assert [len(stream) for stream in fake.streams] == [1]
    await sink.aclose()


async def test_recorder_sends_without_blocking_the_agent_loop(collector, tmp_path: Path) -> None:
    fake, channel = collector
    fake.delay = 0.3
    sink = CollectorSink(channel, batch_size=8, flush_interval=0.01)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    recorder = TrajectoryRecorder(
        tmp_path / "sent.json", sink="collector", collector=sink, trajectory_id="abc", agent_name="net"
    )
    scripted_run(recorder, secret=SECRETS["openai"])
    started = time.perf_counter()
    recorder.finalize_recording(True, "done")
    assert time.perf_counter() - started < 0.25  # the 0.3 s ingest is not waited for
    await asyncio.sleep(0.05)
    assert fake.streams == [] and ticks > 0  # sending is in flight; the loop keeps running
    before = ticks
    await recorder.aflush()
    ticking.cancel()
    assert ticks > before + 10  # the loop ran all along the 0.3 s call
    [[sent]] = fake.streams
    assert sent.trajectory_id == "abc" and sent.agent.name == "net" and len(sent.agent_steps) == 3
    assert sent.termination_reason == TR.TERMINATION_REASON_COMPLETED and len(sent.decisions) == 3
    assert sent.total_usage.input_tokens == 600
    assert_no_secret(sent.SerializeToString())
    assert not (tmp_path / "sent.json").exists()  # collector-only: the spool file goes once stored
    assert not (tmp_path / "sent.json.journal").exists()
    await sink.aclose()


async def test_both_keeps_the_file_and_a_rejected_item_is_logged(collector, tmp_path: Path, caplog) -> None:
    fake, channel = collector
    fake.reject_ids = ("bad",)
    sink = CollectorSink(channel, batch_size=8, flush_interval=0.01)
    good = TrajectoryRecorder(tmp_path / "good.json", sink="both", collector=sink, trajectory_id="good")
    bad = TrajectoryRecorder(tmp_path / "bad.json", sink="collector", collector=sink, trajectory_id="bad")
    for recorder in (good, bad):
        scripted_run(recorder, steps=1)
        recorder.finalize_recording(True)
    with caplog.at_level(logging.WARNING, logger="cohort.sdk.sinks"):
        await sink.aclose()
    assert (tmp_path / "good.json").exists() and (tmp_path / "bad.json").exists()
    assert (sink.sent, sink.failed) == (1, 1)
    assert "rejected trajectory bad" in caplog.text and "bad.json" in caplog.text


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_down_collector_keeps_the_file_and_logs(tmp_path: Path, caplog) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{unused_port()}")
    sink = CollectorSink(channel, batch_size=8, flush_interval=0.01, rpc_timeout=5)
    recorder = TrajectoryRecorder(tmp_path / "kept.json", sink="collector", collector=sink)
    scripted_run(recorder, steps=1)
    started = time.perf_counter()
    assert recorder.finalize_recording(True) == tmp_path / "kept.json"
    assert time.perf_counter() - started < 0.25
    with caplog.at_level(logging.WARNING, logger="cohort.sdk.sinks"):
        await sink.aclose()
    await channel.close()
    assert (tmp_path / "kept.json").exists()
    assert (sink.sent, sink.failed) == (0, 1)
    assert "collector ingest failed (UNAVAILABLE" in caplog.text and "kept.json" in caplog.text
