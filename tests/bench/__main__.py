"""`make bench`: Cohort's speed figures, each printed beside its target.

Figures are measured here, not asserted in unit tests: these machines are shared and noisy, so each
figure is a median over several runs, and ratios are taken within one run.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cohort.config import SERVICE_NAMES, Settings
from cohort.rpc.probe import grpc_health
from cohort.services.suite import start_suite

RUNS = 5


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: float
    lower_is_better: bool = True

    @property
    def met(self) -> bool:
        return self.value <= self.target if self.lower_is_better else self.value >= self.target

    def line(self) -> str:
        sign = "<=" if self.lower_is_better else ">="
        verdict = "ok" if self.met else "MISSED"
        measured = f"{self.value:>9.3f} {self.unit:<4}"
        return f"{self.name:<58} {measured} target {sign} {self.target:g} {self.unit}  {verdict}"


async def _suite_startup_seconds() -> float:
    """`start_suite` of all seven services on a fresh embedded database, until every one is SERVING."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        suite = await start_suite(Settings(data_dir=Path(tmp)), ["all"], ephemeral_ports=True)
        try:
            for name in SERVICE_NAMES[:-1]:
                assert await grpc_health(suite.context.channels.channel(name)) == "SERVING"
            return time.perf_counter() - started
        finally:
            await suite.stop(0)


def _serve_all_process_seconds() -> float:
    """`cohort serve all` as a new process on a fresh data directory, until its ready banner."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
        env["COHORT_DATA_DIR"] = tmp
        for name in SERVICE_NAMES:
            env[f"COHORT_{name.upper()}_PORT"] = "0"
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "cohort.cli", "serve", "all"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            for line in process.stdout:
                if "Ctrl-C or SIGTERM" in line:
                    return time.perf_counter() - started
            raise RuntimeError("cohort serve all exited before it was ready")
        finally:
            process.terminate()
            process.wait(timeout=15)


def main() -> int:
    startup = [asyncio.run(_suite_startup_seconds()) for _ in range(RUNS)]
    process = [_serve_all_process_seconds() for _ in range(RUNS)]
    figures = [
        Figure("suite start-up, 7 services, fresh SQLite (in-process)", statistics.median(startup), "s", 5.0),
        Figure(
            "`cohort serve all` process start to ready (fresh data dir)", statistics.median(process), "s", 5.0
        ),
    ]
    print(f"Cohort benchmarks (median of {RUNS} runs, {os.cpu_count()} cores)")
    for figure in figures:
        print(figure.line())
    return 0 if all(f.met for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
