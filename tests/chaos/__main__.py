"""`make chaos`: training jobs under the faults an operator meets every week.

Production layout, all on this machine: each service its own `cohort serve <name>` process, on a
private PostgreSQL and a private Redis this script starts itself (never the machine's shared ones),
with short job leases. A baseline job runs undisturbed; then, for each fault, several jobs with the
same spec and seed run while the fault is injected once mid-job:

- restart (kill -9, then start again on the same port) the trainer, collector, reward, checkpoint or
  budget service, or the jobs process;
- restart PostgreSQL (`pg_ctl restart -m fast`) or Redis.

Each run must end with the job SUCCEEDED, the same final policy (parameters' sha256) as the
baseline (no iteration lost or applied twice), every acknowledged training rollout of the baseline
present exactly once (by iteration, query and rollout index, not superseded), and the job's ledger
equal to the summed cost of every trajectory the job produced. Prints one row per fault and exits
non-zero when any loss column is not 0. Every loop is bounded and everything started is stopped.

    python tests/chaos [--runs N] [--faults trainer,postgres,...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cohort.api.budget.v1 import budget_pb2, budget_pb2_grpc
from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.config import Settings
from cohort.platform.event_loop import run_event_loop
from cohort.platform.rpc.client import ChannelPool
from cohort.platform.rpc.probe import grpc_health

SERVICES = ("collector", "reward", "trainer", "checkpoint", "budget", "jobs")
FAULTS = (*SERVICES, "postgres", "redis")
JOB_TIMEOUT_SECONDS = 120.0
START_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


def as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its commands as the `postgres` user then."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


class PrivatePostgres:
    """A PostgreSQL cluster of this run's own, in a temporary directory, on a free port."""

    def __init__(self, root: Path) -> None:
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server binaries (pg_ctl) on this machine")
        self.dir = root / "pgdata"
        self.port = free_port()
        self.socket_dir = root / "pgsocket"

    def _run(self, *args: str) -> None:
        subprocess.run([*as_postgres_user(), *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        for path in (self.dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), action, "-D", str(self.dir), "-w", "-t", "30", "-o", options,
            "-l", str(self.dir / "server.log"), *extra,
        )  # fmt: skip

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except Exception:  # noqa: BLE001 - best effort at the end
            pass

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("no redis-server on this machine")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("the private Redis did not start")

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass
class Services:
    """Each Cohort service in its own process, on fixed ports so a restarted one is found again."""

    root: Path
    environment: dict[str, str]
    ports: dict[str, int]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str) -> None:
        log = open(self.root / f"{name}.log", "a")  # noqa: SIM115 - the child process holds it
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "cohort.cli", "serve", name],
            env=self.environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        log.close()

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


async def wait_serving(pool: ChannelPool, names: list[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    for name in names:
        while await grpc_health(pool.channel(name)) != "SERVING":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start within {START_TIMEOUT_SECONDS:.0f} s")
            await asyncio.sleep(0.1)


def chaos_job(seed: int) -> jobs_pb2.Job:
    spec = jobs_pb2.JobSpec(
        runtime=collector_pb2.RuntimeSpec(
            toolbench=collector_pb2.ToolbenchRuntime(
                simulated_tokens_per_step=200, simulated_model="toolbench-sim"
            )
        ),
        dataset=jobs_pb2.DatasetSpec(
            toolbench=jobs_pb2.ToolbenchQueries(train_count=40, heldout_count=6, seed=3)
        ),
        policy=jobs_pb2.PolicySource(new_policy=jobs_pb2.NewPolicy()),
        group_size=4,
        batch_size=3,
        iterations=6,
        checkpoint_interval=1,
        evaluation_interval=6,
        seed=seed,
    )
    spec.runtime.toolbench.simulated_step_latency.FromMilliseconds(25)
    return jobs_pb2.Job(display_name="chaos", spec=spec)


@dataclass
class Outcome:
    state: str
    policy_sha256: str
    rollouts: Counter  # (iteration, group position, rollout index, termination) of live training rollouts
    ledger_micro_usd: int
    trajectory_cost_micro_usd: int
    attempts: int
    error: str = ""


async def run_job(pool: ChannelPool, seed: int, fault=None) -> Outcome:
    jobs = jobs_pb2_grpc.JobServiceStub(pool.channel("jobs"))
    created = await call_with_retries(lambda: jobs.CreateJob(jobs_pb2.CreateJobRequest(job=chaos_job(seed))))
    job_id = created.job.job_id
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    injected = fault is None
    while True:
        job = (await call_with_retries(lambda: jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id)))).job
        if not injected and job.state == jobs_pb2.Job.STATE_RUNNING and job.progress.iteration >= 2:
            await fault()
            injected = True
        if job.state in (
            jobs_pb2.Job.STATE_SUCCEEDED,
            jobs_pb2.Job.STATE_FAILED,
            jobs_pb2.Job.STATE_CANCELLED,
        ):
            break
        if time.monotonic() > deadline:
            await jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id))
            return Outcome("TIMED OUT", "", Counter(), 0, 0, job.progress.attempt)
        await asyncio.sleep(0.1)
    return await outcome_of(pool, job)


async def call_with_retries(call, seconds: float = 60.0):
    """The harness's own calls ride out the faults it injects."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def outcome_of(pool: ChannelPool, job: jobs_pb2.Job) -> Outcome:
    collector = collector_pb2_grpc.CollectorServiceStub(pool.channel("collector"))
    trainer = trainer_pb2_grpc.TrainerServiceStub(pool.channel("trainer"))
    budget = budget_pb2_grpc.BudgetServiceStub(pool.channel("budget"))
    rollouts: Counter = Counter()
    cost = 0
    token = ""
    while True:
        page = await call_with_retries(
            lambda token=token: collector.SearchTrajectories(
                collector_pb2.SearchTrajectoriesRequest(
                    filter=collector_pb2.TrajectoryFilter(job_id=job.job_id, include_superseded=True),
                    page_size=500,
                    page_token=token,
                    view=collector_pb2.TRAJECTORY_VIEW_FULL,
                )
            )
        )
        for hit in page.hits:
            trajectory = hit.trajectory
            cost += trajectory.cost_micro_usd
            if trajectory.labels.get("purpose") != "training" or trajectory.superseded:
                continue
            position = trajectory.group_id.rsplit("-q", 1)[-1]
            rollouts[
                (
                    trajectory.iteration,
                    position,
                    trajectory.labels.get("cohort.rollout_index"),
                    trajectory_pb2.TerminationReason.Name(trajectory.termination_reason),
                )
            ] += 1
        token = page.next_page_token
        if not token:
            break
    policy = job.progress.policy
    sha = ""
    if policy.policy_id:
        got = await call_with_retries(
            lambda: trainer.GetPolicy(
                trainer_pb2.GetPolicyRequest(
                    policy_id=policy.policy_id, version=policy.version, include_parameters=True
                )
            )
        )
        sha = got.policy.parameters_sha256
    usage = await call_with_retries(lambda: budget.GetUsage(budget_pb2.GetUsageRequest(job_id=job.job_id)))
    return Outcome(
        state=jobs_pb2.Job.State.Name(job.state).removeprefix("STATE_"),
        policy_sha256=sha,
        rollouts=rollouts,
        ledger_micro_usd=job_spent(usage),
        trajectory_cost_micro_usd=cost,
        attempts=job.progress.attempt,
        error=job.error.message,
    )


def job_spent(usage: budget_pb2.GetUsageResponse) -> int:
    """What the ledger booked for the job (committed spend)."""
    return usage.job.spent_micro_usd


@dataclass
class Row:
    fault: str
    runs: int = 0
    succeeded: int = 0
    lost: int = 0
    duplicated: int = 0
    policy_mismatch: int = 0
    ledger_error_micro_usd: int = 0
    notes: list[str] = field(default_factory=list)


def compare(row: Row, baseline: Outcome, outcome: Outcome) -> None:
    row.runs += 1
    row.succeeded += outcome.state == "SUCCEEDED"
    live = Counter({key[:3]: n for key, n in outcome.rollouts.items()})
    expected = Counter({key[:3]: n for key, n in baseline.rollouts.items()})
    row.lost += sum((expected - live).values())
    row.duplicated += sum(max(0, n - 1) for n in live.values())
    row.policy_mismatch += outcome.policy_sha256 != baseline.policy_sha256
    row.ledger_error_micro_usd += abs(outcome.ledger_micro_usd - outcome.trajectory_cost_micro_usd)
    if outcome.state != "SUCCEEDED":
        row.notes.append(f"{outcome.state}: {outcome.error}")
    elif outcome.rollouts != baseline.rollouts:
        row.notes.append("rollout outcomes differ from the baseline")


async def chaos(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="cohort-chaos-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        os.chmod(root, 0o777)  # noqa: PTH101 - before anything runs on the loop
    postgres, redis = PrivatePostgres(root), PrivateRedis()
    ports = {name: free_port() for name in SERVICES}
    services: Services | None = None
    pool: ChannelPool | None = None
    started = time.monotonic()
    try:
        postgres.start()
        redis.start()
        environment = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
        environment.update(
            COHORT_DATA_DIR=str(root / "var"),
            COHORT_DATABASE_URL=postgres.url,
            COHORT_REDIS_URL=redis.url,
            COHORT_AUTH_ENABLED="false",
            COHORT_JOB_LEASE_SECONDS="3",
            COHORT_LOG_LEVEL="WARNING",
            COHORT_CHECKPOINT_DIR=str(root / "checkpoints"),
            **{f"COHORT_{name.upper()}_PORT": str(port) for name, port in ports.items()},
            **{f"COHORT_{name.upper()}_ADDRESS": f"127.0.0.1:{port}" for name, port in ports.items()},
        )
        services = Services(root, environment, ports)
        # The jobs service migrates the schema first; the others find it done.
        services.start("jobs")
        settings = Settings(
            auth_enabled=False,
            addresses={name: f"127.0.0.1:{port}" for name, port in ports.items()},
            rpc_timeout_seconds=30.0,
        )
        pool = ChannelPool(settings)
        await wait_serving(pool, ["jobs"])
        for name in SERVICES[:-1]:
            services.start(name)
        await wait_serving(pool, list(SERVICES))
        up = time.monotonic() - started
        print(f"suite up in {up:.1f} s (PostgreSQL :{postgres.port}, Redis :{redis.port})")

        baseline = await run_job(pool, seed=11)
        if baseline.state != "SUCCEEDED":
            print(f"the undisturbed baseline job did not succeed: {baseline.state} {baseline.error}")
            return 1
        count = sum(baseline.rollouts.values())
        print(f"baseline: {count} training rollouts, policy {baseline.policy_sha256[:12]}")

        def restart_service(name: str):
            async def fault() -> None:
                services.kill(name)
                await asyncio.sleep(0.3)
                services.start(name)

            return fault

        async def restart_postgres() -> None:
            await asyncio.to_thread(postgres.restart)

        async def restart_redis() -> None:
            await asyncio.to_thread(redis.restart)

        faults = {name: restart_service(name) for name in SERVICES}
        faults["postgres"] = restart_postgres
        faults["redis"] = restart_redis
        rows: list[Row] = []
        for name in args.faults:
            row = Row(name)
            rows.append(row)
            for _ in range(args.runs):
                outcome = await run_job(pool, seed=11, fault=faults[name])
                compare(row, baseline, outcome)
                if name in SERVICES:
                    await wait_serving(pool, [name])
            print(f"  {name}: {row.succeeded}/{row.runs} succeeded", flush=True)
        print_table(rows, time.monotonic() - started)
        bad = [r for r in rows if r.succeeded < r.runs or r.lost or r.duplicated or r.policy_mismatch]
        bad += [r for r in rows if r.ledger_error_micro_usd]
        return 1 if bad else 0
    finally:
        if pool is not None:
            await pool.close()
        if services is not None:
            services.stop_all()
        redis.stop()
        postgres.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"logs kept in {root}")


def print_table(rows: list[Row], seconds: float) -> None:
    headers = ("fault", "runs", "jobs succeeded", "lost", "duplicated", "policy differs", "ledger error")
    cells = [headers] + [
        (
            r.fault,
            str(r.runs),
            str(r.succeeded),
            str(r.lost),
            str(r.duplicated),
            str(r.policy_mismatch),
            f"${r.ledger_error_micro_usd / 1e6:.6f}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print()
    for index, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        for note in dict.fromkeys(r.notes):
            print(f"  {r.fault}: {note}")
    print(f"\n{sum(r.runs for r in rows)} faulted jobs in {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="jobs per fault (default 3)")
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated, from {','.join(FAULTS)}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    args = parser.parse_args()
    args.faults = [f for f in args.faults.split(",") if f]
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    sys.exit(run_event_loop(chaos(args)))


if __name__ == "__main__":
    main()
