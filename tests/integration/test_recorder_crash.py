"""A recording process killed with SIGKILL: its journal is recovered into a valid, CRASHED Trae file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.sdk import JournalInUse, load_recorded, recover_journal, recover_path
from cohort.sdk.trajectories.trae import trae_to_trajectory

READY_AFTER = 25

AGENT = textwrap.dedent(
    """
    import sys, time
    from cohort.sdk import TrajectoryRecorder

    path, ready_after = sys.argv[1], int(sys.argv[2])
    recorder = TrajectoryRecorder(path, agent_name="doomed", trajectory_id="crash-1")
    recorder.start_recording("loop until killed", "openai", "gpt-4o", 100000)
    messages = [{"role": "user", "content": "go"}]
    step = 0
    while True:
        step += 1
        response = {
            "content": f"step {step}",
            "model": "gpt-4o",
            "finish_reason": "tool_calls",
            "usage": {"input_tokens": 10, "output_tokens": 2},
            "tool_calls": [{"call_id": f"c{step}", "name": "bash", "arguments": {"command": "true"}}],
        }
        recorder.record_llm_interaction(messages, response, "openai", "gpt-4o", ["bash"])
        recorder.record_decision("next_tool", ["bash", "task_done"], 0, -0.1)
        recorder.record_agent_step(
            step, "calling_tool", messages, response, response["tool_calls"],
            [{"call_id": f"c{step}", "success": True, "result": "", "error": None}],
        )
        if step == ready_after:
            print("ready", flush=True)
        if step >= ready_after:
            time.sleep(0.001)
    """
)


def test_sigkilled_recorder_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    journal = tmp_path / "run.json.journal"
    process = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(path), str(READY_AFTER)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.strip() == "ready", process.stderr.read()
        with pytest.raises(JournalInUse):  # still alive: not a crash yet
            recover_journal(journal)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not path.exists() and journal.exists()
    with journal.open("ab") as handle:  # as if the kill landed in the middle of a write
        handle.write(b'{"event":"step","time":"2030-01-01T00:00:00+00:00","data":{"step_number":99')

    assert recover_journal(journal) == path
    assert not journal.exists()
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert len(doc["agent_steps"]) >= READY_AFTER
    assert [s["step_number"] for s in doc["agent_steps"]] == list(range(1, len(doc["agent_steps"]) + 1))
    assert len(doc["llm_interactions"]) >= READY_AFTER
    assert doc["success"] is False and doc["end_time"]
    assert doc["cohort"]["termination_reason"] == "TERMINATION_REASON_CRASHED"
    assert doc["cohort"]["trajectory_id"] == "crash-1"
    assert doc["cohort"]["outcome"]["kind"] == "OUTCOME_KIND_FAILURE" and doc["cohort"]["outcome"]["inferred"]
    # Steps passed the interaction's own messages and response: the journal referred to them.
    assert b'"$interaction"' not in path.read_bytes()
    assert doc["agent_steps"][3]["llm_response"] == doc["llm_interactions"][3]["response"]
    assert doc["agent_steps"][3]["llm_messages"] == [{"role": "user", "content": "go"}]
    assert trae_to_trajectory(doc).agent_steps  # a valid Trae document
    recovered = load_recorded(doc)
    assert recovered.termination_reason == trajectory_pb2.TerminationReason.TERMINATION_REASON_CRASHED
    assert recovered.agent.name == "doomed"
    assert len(recovered.decisions) >= READY_AFTER
    assert recovered.total_usage.input_tokens == 10 * len(doc["llm_interactions"])

    before = (path.read_bytes(), path.stat().st_mtime_ns)
    assert recover_journal(journal) == path  # a second recovery is a no-op
    assert recover_path(tmp_path) == []
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
