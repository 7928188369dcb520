"""Recorder overhead: one agent loop run bare and with a `TrajectoryRecorder` journaling every event.

The loop is 20 steps of a Trae-style agent. Each step stands in for its LLM call with
`time.sleep(0.002)` (2 ms: far faster than any real model call, so the ratio is pessimistic; a
stand-in that does no work would make any overhead look infinite) and does the agent's own small
work: building the call's messages (Trae's clients pass only the step's new messages: system prompt
and task first, then the previous step's tool results), a response with usage and a tool call,
and the tool's result. The recorded loop adds `start_recording` and, per step, `record_llm_interaction`,
`record_decision` and `record_agent_step` (three journal lines, each redacted, serialized and
written with one `write`). Runs are interleaved, bare then recorded, `REPEATS` times; the figure is
the median of the per-pair ratios (times are medians).

`measure()` (the figure `make bench` reports) is the loop with journaling: the per-step overhead an
agent pays while it runs. `finalize_recording` (journal fsync, final Trae file built through the
proto, pretty-printed, written atomically with fsync of file and directory, journal removed) is a
once-per-run cost of a few milliseconds, independent of how long the LLM calls take; it is
measured apart (`measure_finalize`, `measure_whole_run`), since against a 2 ms stand-in for the LLM
call it would dominate a ratio that against real model latencies (seconds) it does not affect.
`measure_fsync_per_event()` is the loop with `fsync="event"`. Run this file to print them all.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from trae_types import LLMMessage, LLMResponse, LLMUsage, ToolCall, ToolResult

STEPS = 20
REPEATS = 41
LLM_CALL_SECONDS = 0.002

SYSTEM_PROMPT = (
    "You are an expert AI software engineering agent. Use the tools to inspect and change files, run "
    "commands and verify your work. Think step by step; when the task is done call task_done. "
) * 8


TOOLS = ["bash", "str_replace_based_edit_tool", "sequentialthinking", "task_done"]


def _agent_loop(recorder=None) -> None:
    """The 20 steps; with a recorder, `start_recording` and every step's events (not finalize)."""
    if recorder is not None:
        recorder.start_recording("Fix the failing test in tests/test_parser.py", "anthropic", "claude", STEPS)
    messages = [
        LLMMessage("system", SYSTEM_PROMPT),
        LLMMessage("user", "Fix the failing test in tests/test_parser.py"),
    ]
    for step in range(1, STEPS + 1):
        time.sleep(LLM_CALL_SECONDS)  # the LLM call
        call = ToolCall(
            "bash",
            f"toolu_{step:04d}",
            {"command": f"cd /repo && python -m pytest tests/test_parser.py -x -q -k case_{step}"},
        )
        response = LLMResponse(
            f"Step {step}: running the parser tests to see which case fails before editing the code.",
            LLMUsage(1200 + 150 * step, 80 + step, cache_read_input_tokens=1000),
            model="claude-sonnet-4-20250514",
            finish_reason="tool_use",
            tool_calls=[call],
        )
        output = f"FAILED tests/test_parser.py::test_case_{step} - AssertionError: expected 3, got 4\n" * 4
        result = ToolResult(call.call_id, "bash", success=False, result=output)
        if recorder is not None:
            recorder.record_llm_interaction(messages, response, "anthropic", response.model, TOOLS)
            recorder.record_decision(
                "next_tool",
                TOOLS,
                0,
                -0.105,
                features={"step": float(step)},
                policy_id="p1",
                policy_version=3,
            )
            recorder.record_agent_step(
                step, "calling_tool", messages, response, response.tool_calls, [result], None, None
            )
        messages = [LLMMessage("user", tool_result=result)]


def _runs(fsync: str) -> tuple[list[float], list[float], list[float]]:
    """Interleaved (bare loop, recorded loop, finalize) seconds, `REPEATS` of each."""
    from cohort.sdk import TrajectoryRecorder
    from cohort.sdk.trajectories.redaction import Redactor
    from cohort.sdk.trajectories.usage import PriceTable

    redactor, prices = Redactor(), PriceTable.load(None)
    bare: list[float] = []
    recorded: list[float] = []
    finalize: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(-2, REPEATS):  # two warm-up rounds, not counted
            recorder = TrajectoryRecorder(
                Path(tmp) / f"run_{i}.json", redactor=redactor, prices=prices, agent_name="bench", fsync=fsync
            )
            started = time.perf_counter()
            _agent_loop()
            middle = time.perf_counter()
            _agent_loop(recorder)
            ended = time.perf_counter()
            recorder.finalize_recording(True, "fixed")
            finalized = time.perf_counter()
            if i >= 0:
                bare.append(middle - started)
                recorded.append(ended - middle)
                finalize.append(finalized - ended)
    return bare, recorded, finalize


def _figures(fsync: str, *, with_finalize: bool) -> tuple[float, float, float]:
    bare, recorded, finalize = _runs(fsync)
    if with_finalize:
        recorded = [r + f for r, f in zip(recorded, finalize, strict=True)]
    # The ratio is the median of the per-pair ratios: a pair runs back to back, so load that drifts
    # during the measurement (these machines are shared) affects both sides of a pair alike.
    ratio = statistics.median(r / b for r, b in zip(recorded, bare, strict=True))
    return statistics.median(bare), statistics.median(recorded), ratio


def measure() -> tuple[float, float, float]:
    """(bare seconds, recorded seconds, ratio) of the 20-step loop journaling every event; target <= 1.05.

    Excludes `finalize_recording`, a once-per-run cost (`measure_finalize`).
    """
    return _figures("finalize", with_finalize=False)


def measure_fsync_per_event() -> tuple[float, float, float]:
    """The same with the journal fsync'd after every event (`fsync="event"`)."""
    return _figures("event", with_finalize=False)


def measure_whole_run() -> tuple[float, float, float]:
    """The same including `finalize_recording` (final file built, written atomically, journal removed)."""
    return _figures("finalize", with_finalize=True)


def measure_finalize() -> float:
    """Median seconds of `finalize_recording` for the 20-step run (about 90 KB of Trae JSON)."""
    return statistics.median(_runs("finalize")[2])


if __name__ == "__main__":
    for name, figure in (
        ("loop, journal (fsync at finalize)", measure),
        ("loop, journal fsync per event", measure_fsync_per_event),
        ("whole run incl. finalize", measure_whole_run),
    ):
        bare_s, recorded_s, ratio = figure()
        figures = f"bare {bare_s * 1000:7.2f} ms  recorded {recorded_s * 1000:7.2f} ms  ratio {ratio:.3f}"
        print(f"{name:<36} {figures}")
    print(f"finalize_recording: {measure_finalize() * 1000:.2f} ms")
