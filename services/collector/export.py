"""Rendering stored trajectories as export records, one function per `ExportFormat`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cohort.api.collector.v1 import collector_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.errors import InvalidArgument
from cohort.trajectories.jsonl import json_line, trajectory_to_json_line
from cohort.trajectories.openai_chat import trajectory_to_openai_chat, validate_openai_chat_record
from cohort.trajectories.trae import trajectory_to_trae_json

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


RENDERERS: dict[int, Renderer] = {
    collector_pb2.EXPORT_FORMAT_COHORT_JSONL: trajectory_to_json_line,
    collector_pb2.EXPORT_FORMAT_TRAE_JSON: trajectory_to_trae_json,
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
