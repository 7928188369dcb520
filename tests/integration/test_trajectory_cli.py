"""`cohort trajectories` end to end, as a user runs it on the embedded default with no server running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.config import Settings
from cohort.platform.context import DEFAULT_TENANT_ID
from cohort.platform.errors import InvalidArgument
from cohort.platform.storage import open_database
from cohort.sdk import TrajectoryRecorder
from cohort.sdk.trajectories.openai_chat import trajectory_to_openai_chat, validate_openai_chat_record
from cohort.sdk.trajectories.trae import load_trae_file
from cohort.services.collector.store import ItemStatus, TrajectoryStore

DATA = Path(__file__).resolve().parents[1] / "data"
COHORT = [sys.executable, "-m", "cohort.cli"]


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    env["COHORT_DATA_DIR"] = str(data_dir)
    # Ports nobody listens on, so the commands start their own in-process collector.
    env["COHORT_COLLECTOR_PORT"] = "1"
    return subprocess.run(
        [*COHORT, "trajectories", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _has_assistant_turn(trajectory) -> bool:
    try:
        validate_openai_chat_record(trajectory_to_openai_chat(trajectory))
    except InvalidArgument:
        return False
    return True


def test_import_list_show_search_export(tmp_path):
    data_dir = tmp_path / "var"
    imported = _cli(data_dir, "import", str(DATA))
    assert imported.returncode == 0, imported.stderr
    expected = sum(len(load_trae_file(path)) for path in DATA.glob("*.json"))
    assert f"imported {expected}, already stored 0, failed 0" in imported.stdout

    again = _cli(data_dir, "import", str(DATA / "trae_seed_example.json"))
    assert "imported 0, already stored 1" in again.stdout, again.stdout + again.stderr

    listed = _cli(data_dir, "list", "--json")
    hits = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(hits) == expected, listed.stderr
    by_task = {hit["trajectory"]["task"]: hit["trajectory"]["trajectoryId"] for hit in hits}
    seed_id = by_task["Create a hello world Python script"]

    # Trae -> Cohort (stored) -> Trae is exact.
    shown = _cli(data_dir, "show", seed_id)
    assert shown.returncode == 0, shown.stderr
    original = json.loads((DATA / "trae_seed_example.json").read_text())
    assert json.loads(shown.stdout) == original
    assert list(json.loads(shown.stdout)) == list(original)

    found = _cli(data_dir, "search", "hello world", "--json")
    assert [json.loads(line)["trajectory"]["trajectoryId"] for line in found.stdout.splitlines()][
        0
    ] == seed_id
    successes = _cli(data_dir, "list", "--success", "--json")
    assert all(json.loads(line)["trajectory"]["success"] for line in successes.stdout.splitlines())

    chat = tmp_path / "chat.jsonl"
    exported = _cli(data_dir, "export", "--format", "openai-chat-jsonl", "--output", str(chat))
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in chat.read_text().splitlines()]
    learnable = [t for path in DATA.glob("*.json") for t in load_trae_file(path) if _has_assistant_turn(t)]
    assert 0 < len(learnable) < expected, "the fixtures hold a trajectory without an assistant turn"
    assert len(records) == len(learnable)
    for record in records:
        validate_openai_chat_record(record)

    trae_dir = tmp_path / "trae"
    trae_dir.mkdir()
    assert _cli(data_dir, "export", "--format", "trae-json", "--output", str(trae_dir)).returncode == 0
    assert json.loads((trae_dir / f"{seed_id}.json").read_text()) == original
    array = tmp_path / "all.json"
    assert _cli(data_dir, "export", "--format", "trae-json", "--output", str(array)).returncode == 0
    assert len(json.loads(array.read_text())) == expected

    lines = _cli(data_dir, "export", "--format", "cohort-jsonl", "--limit", "1").stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["trajectoryId"]


def test_bad_inputs_are_named(tmp_path):
    data_dir = tmp_path / "var"
    broken = tmp_path / "broken.json"
    broken.write_text('{"task": "x", "agent_steps": [')
    result = _cli(data_dir, "import", str(broken))
    assert result.returncode == 1
    assert "broken.json" in result.stderr and "line 1" in result.stderr
    missing = _cli(data_dir, "show", "no-such-trajectory")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    assert _cli(data_dir, "export", "--format", "yaml").returncode == 2
    unwritable = _cli(
        data_dir, "export", "--format", "cohort-jsonl", "-o", str(tmp_path / "no" / "such" / "x.jsonl")
    )
    assert (
        unwritable.returncode == 1
        and "cannot write" in unwritable.stderr
        and "Traceback" not in unwritable.stderr
    )
    done = _cli(data_dir, "export", "--format", "cohort-jsonl", "-o", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0 and (tmp_path / "out.jsonl").exists()
    assert not list(tmp_path.glob("*.partial"))
    assert "Traceback" not in result.stderr + missing.stderr


def test_recover_a_journal_left_by_a_crash(tmp_path):
    script = (
        "from cohort.sdk import TrajectoryRecorder\n"
        f"r = TrajectoryRecorder({str(tmp_path / 'run.json')!r})\n"
        "r.start_recording('add 2 and 3', 'openai', 'gpt-4o', 10)\n"
        "call = {'call_id': 'c1', 'name': 'add', 'arguments': {}}\n"
        "r.record_agent_step(1, 'calling_tool', tool_calls=[call])\n"
        "import os; os._exit(9)\n"  # dies without finalizing, like kill -9
    )
    subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert (tmp_path / "run.json.journal").exists()
    result = _cli(tmp_path / "var", "recover", str(tmp_path))
    assert result.returncode == 0, result.stderr
    recovered = json.loads((tmp_path / "run.json").read_text())
    assert recovered["task"] == "add 2 and 3" and len(recovered["agent_steps"]) == 1
    assert recovered["cohort"]["termination_reason"] == "TERMINATION_REASON_CRASHED"


async def test_a_recorded_file_keeps_its_cohort_block(tmp_path):
    """record -> file -> import: found by agent and job, the file comes back from the export, and
    the collector holds what the SDK's collector sink would have sent (the same content)."""
    path = tmp_path / "runs" / "run.json"
    recorder = TrajectoryRecorder(
        path,
        agent_name="my-agent",
        job_id="job-7",
        group_id="grp-1",
        iteration=3,
        query_id="q-1",
        labels={"split": "train"},
    )
    recorder.start_recording("Add 2 and 3", "openai", "gpt-4o", 5)
    call = {"call_id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}}
    response = {"content": "", "model": "gpt-4o", "finish_reason": "tool_calls", "tool_calls": [call]}
    recorder.record_llm_interaction(
        [{"role": "user", "content": "Add 2 and 3"}], response, "openai", "gpt-4o"
    )
    recorder.record_decision("next_tool", ["add", "answer"], 0, -0.3, policy_id="pol-1", policy_version=2)
    recorder.record_agent_step(1, "completed", tool_calls=[call])
    recorder.set_outcome("success", 1.0)
    recorder.finalize_recording(True, "5")
    tid = recorder.trajectory_id

    data_dir = tmp_path / "var"
    imported = _cli(data_dir, "import", str(path.parent))
    assert "imported 1, already stored 0, failed 0" in imported.stdout, imported.stderr

    by_agent = _cli(data_dir, "list", "--agent", "my-agent", "--json")
    assert [json.loads(line)["trajectory"]["trajectoryId"] for line in by_agent.stdout.splitlines()] == [tid]
    by_job = _cli(
        data_dir,
        "list",
        "--job",
        "job-7",
        "--group",
        "grp-1",
        "--iteration",
        "3",
        "--label",
        "split=train",
        "--json",
    )
    assert [json.loads(line)["trajectory"]["trajectoryId"] for line in by_job.stdout.splitlines()] == [tid]
    shown = json.loads(_cli(data_dir, "show", tid, "--format", "cohort").stdout)
    assert shown["decisions"][0]["chosen"] == "add" and shown["queryId"] == "q-1"
    assert shown["outcome"]["kind"] == "OUTCOME_KIND_SUCCESS"

    out = tmp_path / "export"
    out.mkdir()
    assert _cli(data_dir, "export", "--format", "trae-json", "--output", str(out)).returncode == 0
    assert (out / f"{tid}.json").read_bytes() == path.read_bytes()

    database = await open_database(Settings(data_dir=data_dir))
    try:
        sent = trajectory_pb2.Trajectory()
        sent.CopyFrom(recorder.trajectory)
        result = await TrajectoryStore(database).ingest(DEFAULT_TENANT_ID, [sent])
    finally:
        await database.close()
    assert [item.status for item in result.items] == [ItemStatus.DUPLICATE]
