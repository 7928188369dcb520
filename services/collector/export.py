"""Rendering stored trajectories as export records, one function per `ExportFormat`.

A scored trajectory's score (reward, components, advantages) is in every format that has a place
for it: cohort-jsonl carries the whole message; trae-json adds it under the top-level `"cohort"` key,
which Trae tools ignore (an unscored trajectory exports exactly its Trae document). An OpenAI chat
fine-tuning record has no such place (OpenAI rejects keys beyond `messages`, `tools`,
`parallel_tool_calls`), so select on the reward instead (`min_reward`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cohort.api.collector.v1 import collector_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk.journal import COHORT_KEY
from cohort.sdk.trajectories.jsonl import json_line, trajectory_to_json_line
from cohort.sdk.trajectories.openai_chat import trajectory_to_openai_chat, validate_openai_chat_record
from cohort.sdk.trajectories.trae import trajectory_to_trae

Renderer = Callable[[trajectory_pb2.Trajectory], str | None]
"""Renders one trajectory, or returns None when the format cannot represent it (it is skipped)."""


def openai_chat_line(trajectory: trajectory_pb2.Trajectory) -> str | None:
    """A fine-tuning record; None for a trajectory with no assistant turn, which has nothing to learn."""
    record = trajectory_to_openai_chat(trajectory)
    try:
        validate_openai_chat_record(record)
    except InvalidArgument:
        return None
    return json_line(record)


def score_section(trajectory: trajectory_pb2.Trajectory) -> dict[str, Any] | None:
    """The trajectory's score in proto field names; None when it was never scored."""
    t = trajectory
    if not t.HasField("reward"):
        return None
    return {
        "reward": t.reward,
        "reward_components": [
            {"name": c.name, "value": c.value, "weight": c.weight, "detail": c.detail}
            for c in t.reward_components
        ],
        "advantage": t.advantage if t.HasField("advantage") else None,
        "decision_advantages": [d.advantage if d.HasField("advantage") else None for d in t.decisions],
    }


def trae_json_record(trajectory: trajectory_pb2.Trajectory) -> str:
    """The Trae document as one line, with the score under `"cohort"` when the trajectory has one."""
    document = trajectory_to_trae(trajectory)
    score = score_section(trajectory)
    if score is not None:
        recorded = document.get(COHORT_KEY)
        # A recorded file's own `cohort` object (kept from its import) keeps its keys; the score joins them.
        if recorded is None or isinstance(recorded, dict):
            document[COHORT_KEY] = {**(recorded or {}), **score}
    return json_line(document)


RENDERERS: dict[int, Renderer] = {
    collector_pb2.EXPORT_FORMAT_COHORT_JSONL: trajectory_to_json_line,
    collector_pb2.EXPORT_FORMAT_TRAE_JSON: trae_json_record,
    collector_pb2.EXPORT_FORMAT_OPENAI_CHAT_JSONL: openai_chat_line,
}


def renderer_for(export_format: int) -> Renderer:
    """The renderer of a format; `InvalidArgument("format")` for UNSPECIFIED or an unknown number."""
    renderer = RENDERERS.get(export_format)
    if renderer is None:
        known = ", ".join(name for name, number in collector_pb2.ExportFormat.items() if number != 0)
        raise InvalidArgument("format", f"unsupported export format {export_format}; choose one of {known}")
    return renderer


def render_record(export_format: int, trajectory: trajectory_pb2.Trajectory) -> str | None:
    """One record (a JSONL line without newline, or one JSON document) in `export_format`."""
    return renderer_for(export_format)(trajectory)


def render_records(renderer: Renderer, trajectories: Sequence[trajectory_pb2.Trajectory]) -> list[str | None]:
    return [renderer(trajectory) for trajectory in trajectories]
