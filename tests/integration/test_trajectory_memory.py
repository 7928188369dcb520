"""Agent-facing trajectory memory over the real collector: compact text and few-shot successes."""

from __future__ import annotations

import json

from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.config import Settings
from cohort.sdk.retrieval import TrajectoryMemory, few_shot_text
from cohort.services.suite import start_suite


def _run(task: str, success: bool, reward: float, tools: list[str], answer: str) -> trajectory_pb2.Trajectory:
    t = trajectory_pb2.Trajectory(
        task=task,
        success=success,
        reward=reward,
        final_result=answer,
        agent=trajectory_pb2.AgentRef(name="toolbench-agent"),
        termination_reason=trajectory_pb2.TERMINATION_REASON_COMPLETED,
    )
    for number, tool in enumerate(tools, start=1):
        step = t.agent_steps.add(step_number=number, state="calling_tool")
        step.tool_calls.add(call_id=f"c{number}", name=tool, arguments_json=json.dumps({}))
    return t


async def test_search_and_similar_successes(tmp_path):
    suite = await start_suite(Settings(data_dir=tmp_path / "var"), ["collector"], ephemeral_ports=True)
    try:
        channel = suite.context.channels.channel("collector")
        runs = [
            _run("convert 5 miles to kilometers", True, 1.0, ["lookup_unit", "multiply"], "8.05 km"),
            _run("convert 10 miles to kilometers", False, 0.0, ["multiply"], "16 miles"),
            _run("convert 3 miles to kilometers quickly", True, 0.8, ["lookup_unit", "multiply"], "4.83 km"),
            _run("what is the capital of France", True, 1.0, ["kb_lookup"], "Paris"),
        ]

        async def requests():
            for run in runs:
                yield collector_pb2.IngestTrajectoriesRequest(trajectory=run)

        stored = await collector_pb2_grpc.CollectorServiceStub(channel).IngestTrajectories(requests())
        assert stored.stored_count == len(runs)

        memory = TrajectoryMemory(channel, agent_name="toolbench-agent")
        text = await memory.search_trajectories("convert 7 miles to kilometers", min_score=0.5, limit=2)
        assert text.startswith("#1 [success, reward 1.00] task: convert 5 miles")
        assert "tools: lookup_unit -> multiply" in text and "answer: 8.05 km" in text
        assert "16 miles" not in text  # reward 0 is below min_score
        assert "#3" not in text

        examples = await memory.similar_successes("convert 12 miles to kilometers", k=2)
        assert [e.final_result for e in examples] == ["8.05 km", "4.83 km"]
        assert few_shot_text(examples).count("Example ") == 2
        assert "No matching" in await memory.search_trajectories("anything", min_score=2.0)
    finally:
        await suite.stop(0)
