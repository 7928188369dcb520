"""The recorder's crash-safe storage: an append-only journal, atomic final files, and recovery.

While an agent runs, every recorder event is one JSON line appended to `<trajectory_path>.journal`
with a single `write(2)` on an `O_APPEND` descriptor (no user-space buffer), so each event reaches
the kernel before the recorder method returns: a process crash (including `kill -9`) loses at most
the event being written, and a torn last line is skipped on recovery. The journal is not fsync'd
per event (measured with `tests/bench/recorder_overhead.py`: fsync per event makes a 20-step loop
with a 2 ms LLM stand-in 30-45 % slower, against 4-5 % without; the budget is 5 %), so it is not
durable against power loss or a kernel crash until `finalize` (or use `fsync="event"`), which
fsyncs the journal and then writes the final file atomically: temp file in the same directory,
fsync, `os.replace`, fsync of the directory. Only then is the journal removed.

A live recorder holds an exclusive `flock` on its journal; `recover_journal` refuses a journal that
is still locked (`JournalInUse`), so recovering a directory never marks a running agent crashed.
The lock dies with the process, so a killed recorder's journal is recoverable at once.

Journal lines read `{"event": <kind>, "time": <UTC ISO-8601>, "data": {...}}`. Kinds: `open`
(first; `"format": "cohort.journal.v1"` and the recorder's identity: trajectory id, agent, labels,
job ids), `start`, `llm_interaction`, `step`, `decision`, `outcome`,
`termination`, `finalize`. Data is redacted before it is written. A step that passes the very
messages and response of the interaction just recorded (as Trae agents do) refers to it
(`{"$interaction": i}`) instead of repeating them; the final file has them in full.

The final file is a Trae trajectory document (what Trae's own recorder writes, read by Trae tools)
with one extra top-level key, `"cohort"`, holding Cohort's additions as the Cohort-only fields of
`cohort.api.trajectory.v1.Trajectory` in proto JSON form with proto field names (`trajectory_id`,
`agent`, `labels`, `job_id`, `group_id`, `iteration`, `query_id`, `policy`, `decisions`,
`termination_reason`, `termination_detail`, `outcome`, `total_usage`, `cost_micro_usd`). Trae
readers ignore it; `trae_to_trajectory` (and so `cohort trajectories import`) reads it into the
message's own fields, and `trajectory_to_trae` writes it back (`cohort.sdk.trajectories.cohort_block`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.sdk.trajectories.cohort_block import COHORT_KEY, apply_cohort
from cohort.sdk.trajectories.cohort_block import outcome_name as outcome_name  # re-exported: recorder
from cohort.sdk.trajectories.cohort_block import parse_time as _parse_time
from cohort.sdk.trajectories.cohort_block import (  # re-exported: recorder, collector runtimes
    termination_name as termination_name,
)
from cohort.sdk.trajectories.trae import (
    INTERACTION_KEYS,
    RESPONSE_KEYS,
    STEP_KEYS,
    TOOL_CALL_KEYS,
    TOOL_RESULT_KEYS,
    TOP_KEYS,
    USAGE_KEYS,
)

if sys.platform != "win32":  # POSIX only; without it a live journal is not protected from recovery.
    import fcntl

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal"
JOURNAL_FORMAT = "cohort.journal.v1"
EVENT_KINDS = ("open", "start", "llm_interaction", "step", "decision", "outcome", "termination", "finalize")

INTERACTION_REF = "$interaction"
"""A step's `llm_messages` / `llm_response` in the journal may read `{"$interaction": i}`: the same
as the `input_messages` / `response` of interaction `i` (0-based), which the step passed again."""

TRAE_KEYS = TOP_KEYS
"""The top-level keys of a Trae trajectory file, in the order Trae writes them."""


class JournalInUse(BlockingIOError):
    """The journal is locked by a live recorder; it is not a crashed run."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def journal_path_for(trajectory_path: str | os.PathLike[str]) -> Path:
    path = Path(trajectory_path)
    return path.with_name(path.name + JOURNAL_SUFFIX)


def final_path_for(journal_path: str | os.PathLike[str]) -> Path:
    path = Path(journal_path)
    if not path.name.endswith(JOURNAL_SUFFIX) or path.name == JOURNAL_SUFFIX:
        raise ValueError(f"{path} is not a journal (its name must end in {JOURNAL_SUFFIX})")
    return path.with_name(path.name[: -len(JOURNAL_SUFFIX)])


# --------------------------------------------------------------------------------------------------
# Writing


class JournalWriter:
    """Appends one JSON line per event with a single `write`; holds an exclusive lock while open."""

    def __init__(self, path: str | os.PathLike[str], *, fsync_each: bool = False) -> None:
        self.path = Path(path)
        self.fsync_each = fsync_each
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd: int | None = os.open(self.path, flags, 0o600)
        except FileExistsError:
            raise FileExistsError(
                f"{self.path} exists: an earlier run at this path crashed or is still running; "
                f"recover it first (`cohort trajectories recover {self.path}`)"
            ) from None
        if sys.platform != "win32":
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # No fsync of the directory here: before finalize the journal is durable against a process
        # crash, which needs none; `sync` (at finalize) makes it durable against power loss too.

    @property
    def closed(self) -> bool:
        return self._fd is None

    def append(self, event: str, moment: datetime, data: Mapping[str, Any]) -> None:
        self.write_line(encode_event(event, moment, data))

    def write_line(self, line: str) -> None:
        """Appends one encoded event (`encode_event`) with a single `write`."""
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed")
        view = memoryview(line.encode("utf-8"))
        while view:  # one write for a regular file; the loop only covers a signal-interrupted write
            written = os.write(self._fd, view)
            view = view[written:]
        if self.fsync_each:
            os.fsync(self._fd)

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            fsync_directory(self.path.parent)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the flock

    def remove(self) -> None:
        """Closes and deletes the journal (after the final file is durable).

        The unlink is not fsync'd: if it is lost (power loss), `recover_journal` finds the final file
        newer than the journal's finalize event and just removes the journal.
        """
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def encode_event(event: str, moment: datetime, data: Mapping[str, Any]) -> str:
    """One journal line (with its newline)."""
    return _ENCODER.encode({"event": event, "time": iso(moment), "data": data}) + "\n"


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Makes a directory's entries (a create, rename or unlink in it) durable; no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Writes `payload` to `path` so that readers see the old file or the whole new one, never a part.

    Temp file in the same directory, fsync, `os.replace`, fsync of the directory. On failure the temp
    file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)
    return path


def _remove_stale_temp_files(final_path: Path) -> None:
    for leftover in final_path.parent.glob(f".{final_path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()


# --------------------------------------------------------------------------------------------------
# Reading and replay


@dataclass
class JournalEvent:
    event: str
    time: str
    data: dict[str, Any]


def read_events(path: str | os.PathLike[str]) -> tuple[list[JournalEvent], int]:
    """The journal's events, and how many lines were skipped (a torn last line, garbage)."""
    events: list[JournalEvent] = []
    skipped = 0
    raw = Path(path).read_bytes()
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            event = JournalEvent(str(record["event"]), str(record.get("time", "")), dict(record["data"]))
        except (ValueError, KeyError, TypeError):
            skipped += 1
            torn = number == len(lines)
            log.warning("%s line %d: %s; skipped", path, number, "torn last line" if torn else "unreadable")
            continue
        if event.event not in EVENT_KINDS:
            skipped += 1
            log.warning("%s line %d: unknown event %r; skipped", path, number, event.event)
            continue
        events.append(event)
    return events, skipped


@dataclass
class TrajectoryState:
    """A trajectory being recorded: the Trae document and Cohort's additions, built from events.

    The live recorder and `recover_journal` both build it with `apply`, so a recovered file is what
    the recorder would have written at that point.
    """

    trae: dict[str, Any] = field(
        default_factory=lambda: {
            "task": "",
            "start_time": "",
            "end_time": "",
            "provider": "",
            "model": "",
            "max_steps": 0,
            "llm_interactions": [],
            "agent_steps": [],
            "success": False,
            "final_result": None,
            "execution_time": 0.0,
        }
    )
    cohort: dict[str, Any] = field(
        default_factory=lambda: {
            "trajectory_id": "",
            "agent": {"name": "", "version": ""},
            "labels": {},
            "job_id": "",
            "group_id": "",
            "iteration": 0,
            "query_id": "",
            "policy": {"policy_id": "", "version": 0},
            "decisions": [],
            "termination_reason": "TERMINATION_REASON_IN_PROGRESS",
            "termination_detail": "",
            "outcome": None,
        }
    )
    started_at: datetime | None = None
    last_event_at: datetime | None = None
    finalized: bool = False
    termination_set: bool = False

    def apply(self, event: str, moment: datetime, data: Mapping[str, Any]) -> None:
        self.last_event_at = moment
        if event == "open":
            for key in ("trajectory_id", "agent", "labels", "job_id", "group_id", "iteration", "query_id"):
                if key in data:
                    self.cohort[key] = data[key]
        elif event == "start":
            self.started_at = _parse_time(data.get("start_time")) or moment
            self.trae.update(
                task=data.get("task", ""),
                start_time=data.get("start_time") or iso(self.started_at),
                provider=data.get("provider", ""),
                model=data.get("model", ""),
                max_steps=data.get("max_steps"),
                llm_interactions=[],
                agent_steps=[],
            )
            self.cohort["decisions"] = []
        elif event == "llm_interaction":
            self.trae["llm_interactions"].append(dict(data))
        elif event == "step":
            step = dict(data)
            interactions = self.trae["llm_interactions"]
            for key, source in (("llm_messages", "input_messages"), ("llm_response", "response")):
                value = step.get(key)
                if isinstance(value, Mapping) and INTERACTION_REF in value:
                    index = value[INTERACTION_REF]
                    found = isinstance(index, int) and 0 <= index < len(interactions)
                    step[key] = interactions[index].get(source) if found else None
            self.trae["agent_steps"].append(step)
        elif event == "decision":
            self.cohort["decisions"].append(dict(data))
            policy = data.get("policy") or {}
            if policy.get("policy_id") and not self.cohort["policy"].get("policy_id"):
                self.cohort["policy"] = dict(policy)
        elif event == "outcome":
            self.cohort["outcome"] = dict(data)
        elif event == "termination":
            self.cohort["termination_reason"] = data["reason"]
            self.cohort["termination_detail"] = data.get("detail", "")
            self.termination_set = True
        elif event == "finalize":
            end = _parse_time(data.get("end_time")) or moment
            self.trae.update(
                end_time=data.get("end_time") or iso(end),
                success=bool(data.get("success")),
                final_result=data.get("final_result"),
                execution_time=data.get("execution_time", self._elapsed(end)),
            )
            if not self.termination_set:
                self.cohort["termination_reason"] = self.default_termination(bool(data.get("success")))
            self.finalized = True
        else:
            raise ValueError(f"unknown journal event {event!r}")

    def default_termination(self, success: bool) -> str:
        """COMPLETED, or MAX_STEPS for a failed run that used all of its `max_steps`."""
        max_steps = self.trae.get("max_steps")
        steps = self.trae["agent_steps"]
        last = max((s.get("step_number") or 0 for s in steps), default=0) if steps else 0
        if (
            not success
            and isinstance(max_steps, int)
            and max_steps > 0
            and max(last, len(steps)) >= max_steps
        ):
            return "TERMINATION_REASON_MAX_STEPS"
        return "TERMINATION_REASON_COMPLETED"

    def mark_crashed(self, detail: str) -> None:
        end = self.last_event_at or utc_now()
        self.trae.update(end_time=iso(end), success=False, execution_time=self._elapsed(end))
        self.cohort["termination_reason"] = "TERMINATION_REASON_CRASHED"
        self.cohort["termination_detail"] = detail
        if self.cohort.get("outcome") is None:  # not a reported failure: an inferred one
            self.cohort["outcome"] = {
                "kind": "OUTCOME_KIND_FAILURE",
                "score": None,
                "confidence": 0.9,
                "reasons": ["the recording process died before the run finished"],
                "inferred": True,
            }

    def _elapsed(self, end: datetime) -> float:
        return max(0.0, (end - self.started_at).total_seconds()) if self.started_at else 0.0


# --------------------------------------------------------------------------------------------------
# The final document


def finish(
    state: TrajectoryState, *, redactor: Any = None, prices: Any = None
) -> tuple[dict[str, Any], trajectory_pb2.Trajectory]:
    """The final Trae document (with the `cohort` key) and the full `Trajectory` message.

    The message is built with `trae_to_trajectory` (the Trae part, and Cohort's fields from the
    `cohort` block), usage is summed and priced (`fill_usage_and_cost`), everything is redacted
    again (the journal data already was; this catches anything a caller put in labels or ids), and
    the file is written back from the message with `trajectory_to_trae`, `cohort` block included.
    So importing the file gives this very message, and exporting that gives this very file.
    """
    from cohort.sdk.trajectories.redaction import Redactor
    from cohort.sdk.trajectories.trae import trajectory_to_trae
    from cohort.sdk.trajectories.usage import PriceTable, fill_usage_and_cost

    trajectory = load_recorded({**state.trae, COHORT_KEY: state.cohort})
    fill_usage_and_cost(trajectory, prices if prices is not None else PriceTable.load(None))
    (redactor if redactor is not None else Redactor()).redact_trajectory(trajectory)
    return trajectory_to_trae(trajectory), trajectory


def load_recorded(document: Mapping[str, Any]) -> trajectory_pb2.Trajectory:
    """Reads a recorded file's document: the Trae keys and the `cohort` block (`trae_to_trajectory`)."""
    from cohort.sdk.trajectories.trae import trae_to_trajectory

    return trae_to_trajectory(document)


# --------------------------------------------------------------------------------------------------
# Building the message of a live recording directly (the memory recorder)


class _NotCanonical(Exception):
    """The recording holds something the fast builder does not handle: use `load_recorded`."""


_MESSAGE_KEY_TUPLES = frozenset(
    {
        ("role", "content"),
        ("role", "content", "tool_call"),
        ("role", "content", "tool_result"),
        ("role", "content", "tool_call", "tool_result"),
    }
)
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXTRAS_ENCODER = json.JSONEncoder(ensure_ascii=False)


def build_recorded(trae: Mapping[str, Any], cohort: Mapping[str, Any]) -> trajectory_pb2.Trajectory:
    """The same message as `load_recorded({**trae, "cohort": cohort})`, built faster.

    For what the recorder itself produces (its `serialize_*` shapes, `+00:00` timestamps written by
    `iso`), the Trae part is written straight into the message: no key-order or timestamp hints to
    compute (there are none), and a step's messages and response that are the very objects of an
    interaction (steps recorded with the interaction's own objects resolve to them) are copied
    from the interaction already converted instead of being converted again. Anything else (a
    non-canonical timestamp, an unexpected key order or type) goes through the reference readers
    of `cohort.sdk.trajectories.trae` for that object, so the result is always `load_recorded`'s
    (`tests/unit/test_recorder_memory.py` compares them field for field).
    """
    from cohort.sdk.trajectories import trae as reference

    try:
        if tuple(trae) != TRAE_KEYS or reference._document_timestamps_are_naive(trae):
            raise _NotCanonical
        t = trajectory_pb2.Trajectory()
        _build_top_level(t, trae, reference)
    except _NotCanonical:
        return load_recorded({**trae, COHORT_KEY: cohort})
    reference._derive_run_state(t)
    apply_cohort(t, cohort)
    # What `trae_to_trajectory` notes for a canonical document with a `cohort` block, so the two
    # messages stay equal and the export writes the block back.
    reference.mark_cohort_block(t)
    return t


def _fast_time(text: Any, target: Any) -> None:
    """Sets `target` from a canonical `+00:00` ISO timestamp (what `iso` writes), else `_NotCanonical`."""
    if type(text) is not str or not text.endswith("+00:00"):
        raise _NotCanonical
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _NotCanonical from None
    if moment.isoformat() != text:
        raise _NotCanonical
    target.seconds = (moment - _EPOCH) // _ONE_SECOND
    target.nanos = moment.microsecond * 1000


def _opt_str(value: Any) -> bool:
    return value is None or type(value) is str


def _build_top_level(t: trajectory_pb2.Trajectory, doc: Mapping[str, Any], reference: Any) -> None:
    task, provider, model = doc["task"], doc["provider"], doc["model"]
    max_steps, success, final_result = doc["max_steps"], doc["success"], doc["final_result"]
    execution_time = doc["execution_time"]
    interactions, steps = doc["llm_interactions"], doc["agent_steps"]
    if not (
        type(task) is str
        and type(provider) is str
        and type(model) is str
        and (max_steps is None or (type(max_steps) is int and -_INT32_MAX - 1 <= max_steps <= _INT32_MAX))
        and (success is None or type(success) is bool)
        and _opt_str(final_result)
        and (execution_time is None or type(execution_time) in (int, float))
        and type(interactions) is list
        and type(steps) is list
    ):
        raise _NotCanonical
    t.task = task
    _fast_time(doc["start_time"], t.start_time)
    _fast_time(doc["end_time"], t.end_time)
    t.provider = provider
    t.model = model
    if max_steps is not None:
        t.max_steps = max_steps
    converted: dict[int, Any] = {}  # id of a messages list / response dict -> its converted field
    for i, item in enumerate(interactions):
        _build_interaction(t.llm_interactions.add(), item, f"llm_interactions[{i}]", reference, converted)
    for i, item in enumerate(steps):
        _build_step(t.agent_steps.add(), item, f"agent_steps[{i}]", reference, converted)
    if success is not None:
        t.success = success
    if final_result is not None:
        t.final_result = final_result
    if execution_time is not None:
        t.execution_time_seconds = float(execution_time)


def _build_interaction(x: Any, obj: Any, path: str, reference: Any, converted: dict[int, Any]) -> None:
    if type(obj) is not dict or tuple(obj) != INTERACTION_KEYS:
        reference._read_interaction(x, obj, path, False)
        return
    provider, model, messages = obj["provider"], obj["model"], obj["input_messages"]
    response, tools = obj["response"], obj["tools_available"]
    if not (
        type(provider) is str
        and type(model) is str
        and type(messages) is list
        and (tools is None or (type(tools) is list and all(type(v) is str for v in tools)))
    ):
        reference._read_interaction(x, obj, path, False)
        return
    try:
        _fast_time(obj["timestamp"], x.timestamp)
    except _NotCanonical:
        x.Clear()
        reference._read_interaction(x, obj, path, False)
        return
    x.provider = provider
    x.model = model
    for i, item in enumerate(messages):
        _build_message(x.input_messages.add(), item, f"{path}.input_messages[{i}]", reference)
    converted[id(messages)] = (messages, x.input_messages)
    if response is not None:
        _build_response(x.response, response, f"{path}.response", reference)
        converted[id(response)] = (response, x.response)
    if tools is None:
        x.tools_available_null = True
    else:
        x.tools_available.extend(tools)


def _build_step(s: Any, obj: Any, path: str, reference: Any, converted: dict[int, Any]) -> None:
    if type(obj) is not dict or tuple(obj) != STEP_KEYS:
        reference._read_step(s, obj, path, False)
        return
    number, state, messages = obj["step_number"], obj["state"], obj["llm_messages"]
    response, calls, results = obj["llm_response"], obj["tool_calls"], obj["tool_results"]
    reflection, error = obj["reflection"], obj["error"]
    if not (
        type(number) is int
        and -_INT32_MAX - 1 <= number <= _INT32_MAX
        and type(state) is str
        and (messages is None or type(messages) is list)
        and (response is None or type(response) is dict)
        and (calls is None or type(calls) is list)
        and (results is None or type(results) is list)
        and _opt_str(reflection)
        and _opt_str(error)
    ):
        reference._read_step(s, obj, path, False)
        return
    try:
        _fast_time(obj["timestamp"], s.timestamp)
    except _NotCanonical:
        s.Clear()
        reference._read_step(s, obj, path, False)
        return
    s.step_number = number
    s.state = state
    if messages is None:
        s.llm_messages_null = True
    else:
        same = converted.get(id(messages))
        if same is not None and same[0] is messages:
            s.llm_messages.extend(same[1])
        else:
            for i, item in enumerate(messages):
                _build_message(s.llm_messages.add(), item, f"{path}.llm_messages[{i}]", reference)
    if response is not None:
        same = converted.get(id(response))
        if same is not None and same[0] is response:
            s.llm_response.CopyFrom(same[1])
        else:
            _build_response(s.llm_response, response, f"{path}.llm_response", reference)
    if calls is None:
        s.tool_calls_null = True
    else:
        for i, item in enumerate(calls):
            _build_tool_call(s.tool_calls.add(), item, f"{path}.tool_calls[{i}]", reference)
    if results is None:
        s.tool_results_null = True
    else:
        for i, item in enumerate(results):
            _build_tool_result(s.tool_results.add(), item, f"{path}.tool_results[{i}]", reference)
    if reflection is not None:
        s.reflection = reflection
    if error is not None:
        s.error = error


def _build_message(m: Any, obj: Any, path: str, reference: Any) -> None:
    if type(obj) is not dict or tuple(obj) not in _MESSAGE_KEY_TUPLES:
        reference._read_message(m, obj, path)
        return
    role, content = obj["role"], obj["content"]
    call, result = obj.get("tool_call"), obj.get("tool_result")
    if not (
        type(role) is str
        and _opt_str(content)
        and (call is None or type(call) is dict)
        and (result is None or type(result) is dict)
    ):
        reference._read_message(m, obj, path)
        return
    m.role = role
    if content is not None:
        m.content = content
    if call is not None:
        _build_tool_call(m.tool_call, call, f"{path}.tool_call", reference)
    if result is not None:
        _build_tool_result(m.tool_result, result, f"{path}.tool_result", reference)
    if (call is None and "tool_call" in obj) or (result is None and "tool_result" in obj):
        # A null `tool_call` / `tool_result` key is kept as a key-order hint: the reference does it.
        m.Clear()
        reference._read_message(m, obj, path)


def _extras(obj: Mapping[str, Any], documented: tuple[str, ...]) -> str:
    """`extra_json` of an object whose documented keys come first, in canonical order ("" if none)."""
    if len(obj) == len(documented):
        return ""
    extras = {key: value for key, value in obj.items() if key not in documented}
    return _EXTRAS_ENCODER.encode(extras)


def _canonical_prefix(obj: Any, documented: tuple[str, ...]) -> bool:
    if type(obj) is not dict:
        return False
    if len(obj) == len(documented):
        return tuple(obj) == documented
    return tuple(obj)[: len(documented)] == documented


def _build_response(r: Any, obj: Any, path: str, reference: Any) -> None:
    if not _canonical_prefix(obj, RESPONSE_KEYS):
        reference._read_response(r, obj, path)
        return
    content, model, finish_reason = obj["content"], obj["model"], obj["finish_reason"]
    usage, calls = obj["usage"], obj["tool_calls"]
    if not (
        _opt_str(content)
        and _opt_str(model)
        and _opt_str(finish_reason)
        and (usage is None or type(usage) is dict)
        and (calls is None or (type(calls) is list and calls))  # `[]` needs the reference's hint
    ):
        reference._read_response(r, obj, path)
        return
    if content is not None:
        r.content = content
    if model is not None:
        r.model = model
    if finish_reason is not None:
        r.finish_reason = finish_reason
    if usage is not None:
        _build_usage(r.usage, usage, f"{path}.usage", reference)
    for i, item in enumerate(calls or ()):
        _build_tool_call(r.tool_calls.add(), item, f"{path}.tool_calls[{i}]", reference)
    extra = _extras(obj, RESPONSE_KEYS)
    if extra:
        r.extra_json = extra


def _build_usage(u: Any, obj: Any, path: str, reference: Any) -> None:
    if not _canonical_prefix(obj, USAGE_KEYS):
        reference._read_usage(u, obj, path)
        return
    for key in USAGE_KEYS:
        value = obj[key]
        if value is None:
            continue
        if type(value) is not int or not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            u.Clear()
            reference._read_usage(u, obj, path)
            return
        setattr(u, key, value)
    extra = _extras(obj, USAGE_KEYS)
    if extra:
        u.extra_json = extra


def _build_tool_call(c: Any, obj: Any, path: str, reference: Any) -> None:
    if not _canonical_prefix(obj, TOOL_CALL_KEYS):
        reference._read_tool_call(c, obj, path)
        return
    call_id, name, provider_id = obj["call_id"], obj["name"], obj["id"]
    if not (type(call_id) is str and type(name) is str and _opt_str(provider_id)):
        reference._read_tool_call(c, obj, path)
        return
    c.call_id = call_id
    c.name = name
    c.arguments_json = _ARGUMENTS_ENCODER.encode(obj["arguments"])
    if provider_id is not None:
        c.id = provider_id
    extra = _extras(obj, TOOL_CALL_KEYS)
    if extra:
        c.extra_json = extra


def _build_tool_result(r: Any, obj: Any, path: str, reference: Any) -> None:
    if not _canonical_prefix(obj, TOOL_RESULT_KEYS):
        reference._read_tool_result(r, obj, path)
        return
    call_id, success, result, error, provider_id = (
        obj["call_id"],
        obj["success"],
        obj["result"],
        obj["error"],
        obj["id"],
    )
    if not (type(call_id) is str and type(success) is bool and _opt_str(result) and _opt_str(error)):
        reference._read_tool_result(r, obj, path)
        return
    if not _opt_str(provider_id):
        reference._read_tool_result(r, obj, path)
        return
    r.call_id = call_id
    r.success = success
    if result is not None:
        r.result = result
    if error is not None:
        r.error = error
    if provider_id is not None:
        r.id = provider_id
    extra = _extras(obj, TOOL_RESULT_KEYS)
    if extra:
        r.extra_json = extra


_ARGUMENTS_ENCODER = json.JSONEncoder(ensure_ascii=False)
_ONE_SECOND = timedelta(seconds=1)


def dump_document(document: Mapping[str, Any]) -> bytes:
    from cohort.sdk.trajectories.trae import dumps_trae

    return dumps_trae(document).encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Recovery


def _try_lock(path: Path) -> int | None:
    """An fd holding the journal's lock, or raises `JournalInUse` if a live recorder holds it."""
    if sys.platform == "win32":
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalInUse(f"{path} is locked by a live recorder") from None
    return fd


def recover_journal(
    journal_path: str | os.PathLike[str], *, redactor: Any = None, prices: Any = None
) -> Path:
    """Rebuilds the trajectory of a journal, writes its final file next to it, removes the journal.

    A journal without a `finalize` event is a crashed run: the file ends at the last event with
    `success: false` and termination `TERMINATION_REASON_CRASHED`. A journal with one (the process
    died between the finalize event and the rename, or after the rename) gives the finished file.
    A torn or unreadable line is skipped. Idempotent: when the journal is gone and the final file
    exists, returns the final file untouched. Raises `JournalInUse` for a live recorder's journal,
    `FileNotFoundError` when there is neither journal nor final file.
    """
    journal = Path(journal_path)
    final = final_path_for(journal)
    if not journal.exists():
        if final.exists():
            return final
        raise FileNotFoundError(f"no journal {journal} and no trajectory file {final}")
    lock_fd = _try_lock(journal)
    try:
        if not journal.exists():  # recovered by someone else while we waited for the lock
            return final
        events, skipped = read_events(journal)
        state = TrajectoryState()
        for event in events:
            moment = _parse_time(event.time) or utc_now()
            state.apply(event.event, moment, event.data)
        finished = state.finalized
        if finished and final.exists() and final.stat().st_mtime >= journal.stat().st_mtime:
            # Crashed after the rename but before the journal was removed: the file is the result.
            log.info("%s: final file already written; removing the journal", journal)
        else:
            if not finished:
                last = iso(state.last_event_at) if state.last_event_at else "none"
                detail = f"recovered from journal: {len(events)} events, last at {last}"
                if skipped:
                    detail += f", {skipped} unreadable line(s) skipped"
                state.mark_crashed(detail)
            document, _ = finish(state, redactor=redactor, prices=prices)
            atomic_write_bytes(final, dump_document(document))
        _remove_stale_temp_files(final)
        os.unlink(journal)
        fsync_directory(journal.parent)
        return final
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def recover_path(path: str | os.PathLike[str], *, redactor: Any = None, prices: Any = None) -> list[Path]:
    """Recovers a journal, or every `*.journal` directly in a directory; returns the final files.

    Journals of live recorders are skipped (logged), as are ones that fail (logged with the error).
    """
    path = Path(path)
    if path.is_dir():
        journals = sorted(p for p in path.glob(f"*{JOURNAL_SUFFIX}") if p.is_file())
    else:
        journals = [path]
    recovered: list[Path] = []
    for journal in journals:
        try:
            recovered.append(recover_journal(journal, redactor=redactor, prices=prices))
        except JournalInUse:
            log.info("%s belongs to a running recorder; skipped", journal)
            if not path.is_dir():
                raise
        except Exception:
            if not path.is_dir():
                raise
            log.exception("could not recover %s", journal)
    return recovered
