"""The `cohort` command as a user runs it: a real process, real ports, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from cohort.api.identity.v1 import identity_pb2, identity_pb2_grpc
from cohort.platform.config import GRPC_SERVICE_NAMES, SERVICE_NAMES

COHORT = [sys.executable, "-m", "cohort.cli"]
COHORT_INTERRUPTIBLE = [
    sys.executable,
    "-c",
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler);"
    " runpy.run_module('cohort.cli', run_name='__main__', alter_sys=True)",
]
"""`cohort` with Ctrl-C handled as in a terminal even when this test run inherited SIGINT ignored
(a background job of a non-interactive shell does; a command started so would ignore Ctrl-C too)."""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    env["COHORT_DATA_DIR"] = str(tmp_path / "var")
    env.update(extra)
    return env


def _cli(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COHORT, *args], env=_environment(tmp_path, **extra), capture_output=True, text=True, timeout=60
    )


def _read_until_ready(process: subprocess.Popen) -> str:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "Ctrl-C or SIGTERM" in line:
            break
    return "".join(lines)


def test_serve_all_starts_every_service_and_stops_on_sigterm(tmp_path):
    ports = dict(zip(SERVICE_NAMES, _free_ports(len(SERVICE_NAMES)), strict=True))
    env = _environment(tmp_path, **{f"COHORT_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    process = subprocess.Popen(
        [*COHORT, "serve", "all"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output = _read_until_ready(process)
        assert "started 7 service(s)" in output, output
        for name in SERVICE_NAMES:
            assert f"127.0.0.1:{ports[name]}" in output

        health = _cli(tmp_path, "health", **{f"COHORT_{n.upper()}_PORT": str(p) for n, p in ports.items()})
        assert health.returncode == 0, health.stdout + health.stderr
        assert health.stdout.count("SERVING") == len(SERVICE_NAMES)

        # The admin key written on first start works against the running suite.
        key = (tmp_path / "var" / "admin.key").read_text().strip()
        assert oct((tmp_path / "var" / "admin.key").stat().st_mode & 0o777) == "0o600"
        with grpc.insecure_channel(f"127.0.0.1:{ports['jobs']}") as channel:
            reply = identity_pb2_grpc.ApiKeyServiceStub(channel).ListApiKeys(
                identity_pb2.ListApiKeysRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=5
            )
        # Beside it, the service credential the services present to each other (var/service.key).
        assert [k.admin for k in reply.api_keys] == [True, True]
        assert "internal service credential" in reply.api_keys[1].display_name

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    down = _cli(tmp_path, "health", **{f"COHORT_{n.upper()}_PORT": str(p) for n, p in ports.items()})
    assert down.returncode == 1
    assert down.stdout.count("UNREACHABLE") == len(SERVICE_NAMES)


def test_serve_one_service_alone(tmp_path):
    (port,) = _free_ports(1)
    process = subprocess.Popen(
        [*COHORT, "serve", "trainer"],
        env=_environment(tmp_path, COHORT_TRAINER_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = _read_until_ready(process)
        assert "trainer" in output and f"127.0.0.1:{port}" in output and "collector" not in output
        health = _cli(tmp_path, "health", "trainer", COHORT_TRAINER_PORT=str(port))
        assert health.returncode == 0, health.stdout
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0


def test_a_bad_configuration_stops_start_up_naming_the_variable(tmp_path):
    result = _cli(tmp_path, "serve", "all", COHORT_JOBS_PORT="jobs")
    assert result.returncode != 0
    assert "COHORT_JOBS_PORT" in result.stderr and "not an integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_service_is_refused(tmp_path):
    result = _cli(tmp_path, "serve", "scheduler")
    assert result.returncode == 2
    assert "scheduler" in result.stderr and "collector" in result.stderr


def test_keys_create_list_revoke(tmp_path):
    created = _cli(tmp_path, "keys", "create", "--tenant", "acme", "--name", "ci", "--json")
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    assert record["tenant_id"] == "acme" and record["secret"].startswith("ck_")

    listed = _cli(tmp_path, "keys", "list", "--tenant", "acme", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["key_id"] for r in rows] == [record["key_id"]]
    assert "secret" not in rows[0]

    revoked = _cli(tmp_path, "keys", "revoke", record["key_id"])
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert _cli(tmp_path, "keys", "list", "--tenant", "acme", "--json").stdout.strip() == ""
    everything = _cli(tmp_path, "keys", "list", "--tenant", "acme", "--include-revoked", "--json")
    assert json.loads(everything.stdout)["revoked_at"] is not None

    missing = _cli(tmp_path, "keys", "revoke", "key_0000000000000000")
    assert missing.returncode == 1 and "not found" in missing.stderr.lower()
    bad = _cli(tmp_path, "keys", "create", "--tenant", "no spaces allowed", "--name", "x")
    assert bad.returncode == 1 and "tenant_id" in bad.stderr


@pytest.mark.parametrize("command", [[], ["serve"], ["keys"], ["keys", "create"], ["demo"], ["health"]])
def test_help_everywhere(tmp_path, command):
    result = _cli(tmp_path, *command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_grpc_service_names_cover_every_backend():
    assert set(GRPC_SERVICE_NAMES) | {"gateway"} == set(SERVICE_NAMES)


SHORT_JOB = """
display_name: cli job
spec:
  runtime: {toolbench: {simulated_step_latency: 0.05s}}
  dataset: {toolbench: {train_count: 20, heldout_count: 4, seed: 1}}
  policy: {new_policy: {}}
  group_size: 2
  batch_size: 2
  iterations: 200
  checkpoint_interval: 1
"""


def _job_state(tmp_path: Path, job_id: str) -> dict:
    got = _cli(tmp_path, "jobs", "get", job_id, "--json")
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)


def test_commands_from_other_shells_never_run_a_job_they_did_not_start(tmp_path):
    """An embedded `train` detached, then `pause` and `resume` from other shells: each command runs
    its own short-lived suite, and none may take the job over (it would die with the command)."""
    spec = tmp_path / "job.yaml"
    spec.write_text(SHORT_JOB)
    submitted = _cli(tmp_path, "train", str(spec), "--detach")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[1]
    assert "No job manager is running" in submitted.stdout
    assert _job_state(tmp_path, job_id)["state"] in ("STATE_QUEUED", "STATE_RUNNING")

    paused = _cli(tmp_path, "jobs", "pause", job_id)
    assert paused.returncode == 0 and "Traceback" not in paused.stderr, paused.stderr
    resumed = _cli(tmp_path, "jobs", "resume", job_id)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert "queued" in resumed.stdout and "No job manager is running" in resumed.stdout
    job = _job_state(tmp_path, job_id)
    assert job["state"] == "STATE_QUEUED", job  # not FAILED by a command that claimed it and exited
    assert "error" not in job


def test_ctrl_c_on_an_embedded_train_hands_the_job_back(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(SHORT_JOB)
    process = subprocess.Popen(
        [*COHORT_INTERRUPTIBLE, "train", str(spec)],
        env=_environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job_id = ""
        deadline = time.monotonic() + 60
        for line in process.stdout:
            if line.startswith("job ") and line.strip().endswith("created"):
                job_id = line.split()[1]
            if job_id and line.startswith("running iteration") and not line.startswith("running iteration 0"):
                break
            assert time.monotonic() < deadline, "the job never ran an iteration"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "stopped with it: it is queued" in out and "Traceback" not in err, (out, err)
    job = _job_state(tmp_path, job_id)
    assert job["state"] == "STATE_QUEUED" and "error" not in job, job
