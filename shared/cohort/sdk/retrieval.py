"""Trajectory memory for agents: past runs as text an LLM can read, and successes as few-shot context.

    memory = TrajectoryMemory(channel)                    # a channel to the collector
    print(await memory.search_trajectories("convert 5 miles to km", min_score=0.5))
    examples = await memory.similar_successes(task, k=3)
    prompt = few_shot_text(examples) + task

Both rank by similarity to the query (the collector's model-free embedder) within the filters.
"""

from __future__ import annotations

import grpc

from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2

MAX_FIELD_CHARS = 200


class TrajectoryMemory:
    def __init__(self, channel: grpc.aio.Channel, *, agent_name: str = "") -> None:
        self._stub = collector_pb2_grpc.CollectorServiceStub(channel)
        self._agent_name = agent_name

    async def search_trajectories(
        self, query: str, min_score: float | None = None, max_score: float | None = None, limit: int = 5
    ) -> str:
        """The `limit` past runs most similar to `query` whose reward is within [min_score, max_score],
        one compact paragraph each (outcome, reward, task, tools used, answer)."""
        selected = collector_pb2.TrajectoryFilter(agent_name=self._agent_name)
        if min_score is not None:
            selected.min_reward = min_score
        if max_score is not None:
            selected.max_reward = max_score
        hits = await self._similar(query, selected, limit)
        if not hits:
            return "No matching past trajectories."
        return "\n\n".join(f"#{i} {describe(hit.trajectory)}" for i, hit in enumerate(hits, start=1))

    async def similar_successes(self, task: str, k: int = 3) -> list[trajectory_pb2.Trajectory]:
        """The `k` successful past runs most similar to `task`, best first."""
        selected = collector_pb2.TrajectoryFilter(agent_name=self._agent_name, success=True)
        return [hit.trajectory for hit in await self._similar(task, selected, k)]

    async def _similar(
        self, text: str, selected: collector_pb2.TrajectoryFilter, limit: int
    ) -> list[collector_pb2.SearchHit]:
        reply = await self._stub.SearchTrajectories(
            collector_pb2.SearchTrajectoriesRequest(
                filter=selected,
                similar_to_text=text,
                page_size=limit,
                view=collector_pb2.TRAJECTORY_VIEW_FULL,
            )
        )
        return list(reply.hits)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 1] + "…"


def tools_used(trajectory: trajectory_pb2.Trajectory) -> list[str]:
    return [call.name for step in trajectory.agent_steps for call in step.tool_calls]


def describe(trajectory: trajectory_pb2.Trajectory) -> str:
    """One compact paragraph an LLM can read."""
    if trajectory.HasField("success"):
        outcome = "success" if trajectory.success else "failure"
    else:
        outcome = "unfinished"
    reward = f", reward {trajectory.reward:.2f}" if trajectory.HasField("reward") else ""
    lines = [f"[{outcome}{reward}] task: {_clip(trajectory.task)}"]
    tools = tools_used(trajectory)
    if tools:
        lines.append("tools: " + " -> ".join(tools))
    if trajectory.HasField("final_result"):
        lines.append(f"answer: {_clip(trajectory.final_result)}")
    return "\n".join(lines)


def few_shot_text(trajectories: list[trajectory_pb2.Trajectory]) -> str:
    """Worked examples for a prompt, from `similar_successes`."""
    if not trajectories:
        return ""
    blocks = [f"Example {i}:\n{describe(t)}" for i, t in enumerate(trajectories, start=1)]
    return "Solved tasks like this one before:\n\n" + "\n\n".join(blocks) + "\n\n"
