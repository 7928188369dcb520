"""A Cohort service in its own process, for benches that measure it apart from their load generator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SERVICE_NAMES = ("collector", "reward", "trainer", "checkpoint", "budget", "jobs", "gateway")
SERVE_WITH_TEST_RUNNER = Path(__file__).parents[1] / "serve_with_test_runner.py"


def start_service(
    component: str, data_dir: str, extra_env: dict[str, str] | None = None, *, job_runner: str = ""
) -> tuple[subprocess.Popen, str]:
    """`cohort serve <component>` on a free port (every service's port 0, SQLite under `data_dir`,
    no inherited COHORT_* settings); returns the process, once ready, and the address it listens on.
    `job_runner`: `module:factory` of a test runner its jobs run with instead of real training."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    env.update(
        COHORT_DATA_DIR=data_dir,
        COHORT_LOG_LEVEL="WARNING",
        **{f"COHORT_{name.upper()}_PORT": "0" for name in SERVICE_NAMES},
        **(extra_env or {}),
    )
    command = (
        [sys.executable, str(SERVE_WITH_TEST_RUNNER), job_runner, component]
        if job_runner
        else [sys.executable, "-m", "cohort.cli", "serve", component]
    )
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    listening = re.compile(rf"^\s*\|?\s*{component}\s*\|?\s+(\S+):(\d+)")
    address, lines = None, []
    for line in process.stdout:
        lines.append(line)
        match = listening.match(line)
        if match:
            address = f"{match.group(1)}:{match.group(2)}"
        if "Ctrl-C or SIGTERM" in line:
            break
    if address is None:
        process.terminate()
        raise RuntimeError(f"cohort serve {component} did not report its address:\n" + "".join(lines))
    return process, address


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
