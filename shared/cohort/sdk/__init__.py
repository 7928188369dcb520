"""Cohort's agent SDK: everything an agent author imports, and nothing of the server platform.

Record a run (`cohort.sdk.recorder`, `journal`, `sinks`): `TrajectoryRecorder` writes an agent's
run as a Trae trajectory with Trae's method names, crash-safely (`<file>.journal`, an atomic final
file), to a file (`FileSink`), the collector (`CollectorSink`) or both; `record_agent` records a
whole async agent in one line. `recover_path` / `recover_journal` turn the journal of a killed
process into a partial trajectory marked CRASHED (`JournalInUse`: its recorder still runs), and
`load_recorded` reads a recorded file back into a `Trajectory`.

Trajectory memory (`cohort.sdk.retrieval`): `TrajectoryMemory` asks the collector for past runs
as text an LLM can read and for similar successes as few-shot context.

The Python agent-runtime contract (`cohort.sdk.runtime`): an agent the collector runs is
`async def agent(task: Task, context: AgentContext) -> AgentResult`; it takes decisions with
`context.decide(...)` (a `DecisionRequest` answered by a `Decider`, options given as `Choice`).

Trajectory formats (`cohort.sdk.trajectories`): Trae JSON both ways (`trae_to_trajectory`,
`trajectory_to_trae`, `load_trae_file`), Cohort's JSONL (`trajectory_to_json_line`,
`trajectory_from_json_line`), OpenAI chat fine-tuning records (`trajectory_to_openai_chat`), chat
transcripts into trajectories (`transcript_to_trajectory`), secret redaction (`Redactor`,
`RedactionRule`) and prices (`PriceTable`).

toolbench (`cohort.sdk.toolbench`): the offline tool-use environment and its agent:
`generate_queries`, `check_answer`, `make_agent(ToolbenchOptions(...))`, its decision heads
(`policy_heads`) and a reference policy (`oracle_decider`).

`__all__` is the public surface. Every other name in these modules is internal to Cohort and may
change without notice. Agents in other languages use the generated stubs of `protos/` instead.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cohort.sdk import toolbench as toolbench
    from cohort.sdk.journal import JournalInUse as JournalInUse
    from cohort.sdk.journal import load_recorded as load_recorded
    from cohort.sdk.journal import recover_journal as recover_journal
    from cohort.sdk.journal import recover_path as recover_path
    from cohort.sdk.recorder import TrajectoryRecorder as TrajectoryRecorder
    from cohort.sdk.recorder import record_agent as record_agent
    from cohort.sdk.retrieval import TrajectoryMemory as TrajectoryMemory
    from cohort.sdk.runtime import AgentContext as AgentContext
    from cohort.sdk.runtime import AgentResult as AgentResult
    from cohort.sdk.runtime import Choice as Choice
    from cohort.sdk.runtime import Decider as Decider
    from cohort.sdk.runtime import DecisionRequest as DecisionRequest
    from cohort.sdk.runtime import Task as Task
    from cohort.sdk.sinks import CollectorSink as CollectorSink
    from cohort.sdk.sinks import FileSink as FileSink
    from cohort.sdk.toolbench import ToolbenchOptions as ToolbenchOptions
    from cohort.sdk.toolbench import check_answer as check_answer
    from cohort.sdk.toolbench import generate_queries as generate_queries
    from cohort.sdk.toolbench import make_agent as make_agent
    from cohort.sdk.toolbench import oracle_decider as oracle_decider
    from cohort.sdk.toolbench import policy_heads as policy_heads
    from cohort.sdk.trajectories.jsonl import trajectory_from_json_line as trajectory_from_json_line
    from cohort.sdk.trajectories.jsonl import trajectory_to_json_line as trajectory_to_json_line
    from cohort.sdk.trajectories.openai_chat import trajectory_to_openai_chat as trajectory_to_openai_chat
    from cohort.sdk.trajectories.redaction import RedactionRule as RedactionRule
    from cohort.sdk.trajectories.redaction import Redactor as Redactor
    from cohort.sdk.trajectories.trae import load_trae_file as load_trae_file
    from cohort.sdk.trajectories.trae import trae_to_trajectory as trae_to_trajectory
    from cohort.sdk.trajectories.trae import trajectory_to_trae as trajectory_to_trae
    from cohort.sdk.trajectories.transcript import transcript_to_trajectory as transcript_to_trajectory
    from cohort.sdk.trajectories.usage import PriceTable as PriceTable

__all__ = [
    # record a run
    "CollectorSink",
    "FileSink",
    "JournalInUse",
    "TrajectoryMemory",
    "TrajectoryRecorder",
    "load_recorded",
    "record_agent",
    "recover_journal",
    "recover_path",
    # the agent-runtime contract
    "AgentContext",
    "AgentResult",
    "Choice",
    "Decider",
    "DecisionRequest",
    "Task",
    # trajectory formats
    "PriceTable",
    "RedactionRule",
    "Redactor",
    "load_trae_file",
    "trae_to_trajectory",
    "trajectory_from_json_line",
    "trajectory_to_json_line",
    "trajectory_to_openai_chat",
    "trajectory_to_trae",
    "transcript_to_trajectory",
    # toolbench
    "ToolbenchOptions",
    "check_answer",
    "generate_queries",
    "make_agent",
    "oracle_decider",
    "policy_heads",
    "toolbench",
]

# The module each public name is defined in, imported on first use (PEP 562): the services import
# single submodules such as `cohort.sdk.trajectories.usage`, which run this file first, and must not
# pull in the recorder or toolbench's NumPy with it. Nothing is imported here, so no submodule can
# meet a half-initialised `cohort.sdk`.
_PUBLIC_NAMES_BY_MODULE: dict[str, tuple[str, ...]] = {
    "cohort.sdk.journal": ("JournalInUse", "load_recorded", "recover_journal", "recover_path"),
    "cohort.sdk.recorder": ("TrajectoryRecorder", "record_agent"),
    "cohort.sdk.sinks": ("CollectorSink", "FileSink"),
    "cohort.sdk.retrieval": ("TrajectoryMemory",),
    "cohort.sdk.runtime": ("AgentContext", "AgentResult", "Choice", "Decider", "DecisionRequest", "Task"),
    "cohort.sdk.trajectories.jsonl": ("trajectory_from_json_line", "trajectory_to_json_line"),
    "cohort.sdk.trajectories.openai_chat": ("trajectory_to_openai_chat",),
    "cohort.sdk.trajectories.redaction": ("RedactionRule", "Redactor"),
    "cohort.sdk.trajectories.trae": ("load_trae_file", "trae_to_trajectory", "trajectory_to_trae"),
    "cohort.sdk.trajectories.transcript": ("transcript_to_trajectory",),
    "cohort.sdk.trajectories.usage": ("PriceTable",),
    "cohort.sdk.toolbench": (
        "ToolbenchOptions",
        "check_answer",
        "generate_queries",
        "make_agent",
        "oracle_decider",
        "policy_heads",
    ),
}
_HOMES = {name: module for module, names in _PUBLIC_NAMES_BY_MODULE.items() for name in names}
_HOMES["toolbench"] = "cohort.sdk.toolbench"


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if home.rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
