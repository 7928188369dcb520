"""Speed of the job manager's lifecycle, with a light test runner (no training).

Every job runs `BenchRunner` (the suite's `job_runner`; tests/serve_with_test_runner.py in a process): one
iteration per `tick` seconds, each a progress write, so what is measured is the job manager itself
(claims, fenced progress writes, fan-out to watchers, reads), on the embedded default (SQLite,
in-process queue, auth on).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import grpc  # noqa: E402
from figures import Figure, percentile  # noqa: E402

from cohort.api.collector.v1 import collector_pb2  # noqa: E402
from cohort.api.jobs.v1 import jobs_pb2 as jpb  # noqa: E402
from cohort.api.jobs.v1 import jobs_pb2_grpc  # noqa: E402
from cohort.platform.config import Settings  # noqa: E402
from cohort.platform.event_loop import run_event_loop  # noqa: E402
from cohort.services.jobs.runner import JobHandle, JobOutcome, RunResult  # noqa: E402

RUNNER_HOOK = "jobs:make_runner"
SERVE_WITH_TEST_RUNNER = Path(__file__).parents[1] / "serve_with_test_runner.py"


class BenchRunner:
    """Ticks one iteration per `tick` seconds (the display name), resuming from its progress."""

    async def run(self, handle: JobHandle) -> RunResult:
        tick = float(handle.job.display_name or 0.5)
        while handle.job.progress.iteration < handle.job.spec.iterations:
            if handle.cancelled.is_set():
                return RunResult(JobOutcome.CANCELLED)
            if handle.pause_requested:
                return RunResult(JobOutcome.PAUSED)
            await asyncio.sleep(tick)
            await handle.update_progress(lambda p: setattr(p, "iteration", p.iteration + 1))
        return RunResult(JobOutcome.SUCCEEDED)

    async def evaluate(self, job, request):
        return jpb.Evaluation()


def make_runner(context) -> BenchRunner:
    return BenchRunner()


def bench_job(tick: float, iterations: int = 100_000) -> jpb.Job:
    return jpb.Job(
        display_name=str(tick),
        spec=jpb.JobSpec(
            runtime=collector_pb2.RuntimeSpec(toolbench=collector_pb2.ToolbenchRuntime()),
            dataset=jpb.DatasetSpec(toolbench=jpb.ToolbenchQueries()),
            policy=jpb.PolicySource(new_policy=jpb.NewPolicy()),
            iterations=iterations,
        ),
    )


async def _suite(tmp: str):
    from cohort.services.suite import start_suite

    return await start_suite(
        Settings(data_dir=Path(tmp)), ["jobs"], ephemeral_ports=True, job_runner=make_runner
    )


async def _create_many(stub, count: int, tick: float) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 50):
        replies = await asyncio.gather(
            *(
                stub.CreateJob(jpb.CreateJobRequest(job=bench_job(tick)), timeout=30)
                for _ in range(start, min(count, start + 50))
            )
        )
        ids.extend(r.job.job_id for r in replies)
    return ids


async def _progressing(stub, ids: list[str]) -> int:
    jobs = (await stub.ListJobs(jpb.ListJobsRequest(page_size=1000), timeout=30)).jobs
    wanted = set(ids)
    return sum(1 for j in jobs if j.job_id in wanted and j.progress.iteration >= 1)


async def get_job_p95_with_running_jobs(running: int = 150, calls: int = 500) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        suite = await _suite(tmp)
        try:
            stub = jobs_pb2_grpc.JobServiceStub(suite.context.channels.channel("jobs"))
            ids = await _create_many(stub, running, tick=0.5)
            deadline = time.monotonic() + 20
            while await _progressing(stub, ids) < running and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            samples = []
            for i in range(calls):
                started = time.perf_counter()
                await stub.GetJob(jpb.GetJobRequest(job_id=ids[i % running]), timeout=10)
                samples.append(time.perf_counter() - started)
            return percentile(samples, 95) * 1000
        finally:
            await suite.stop(0)


async def _watch_samples(address: str, api_key: str, job_id: str, watchers: int) -> list[float]:
    """`watchers` WatchJob streams over 8 channels: for each change after the first snapshot, the
    delay from its `update_time` (stamped in the committing transaction) to its arrival."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(8)]
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    samples: list[float] = []

    async def watch(channel) -> None:
        first = True
        async for message in jobs_pb2_grpc.JobServiceStub(channel).WatchJob(
            jpb.WatchJobRequest(job_id=job_id), metadata=metadata
        ):
            arrived = time.time()
            if first:  # the current snapshot, not a change
                first = False
                continue
            if not message.heartbeat:
                samples.append(arrived - message.job.update_time.ToDatetime().timestamp())

    try:
        await asyncio.gather(*(watch(channels[i % len(channels)]) for i in range(watchers)))
    finally:
        for channel in channels:
            await channel.close()
    return samples


async def watch_delivery_p95(watchers: int = 1000, processes: int = 2) -> float:
    """One job ticking every 0.3 s, watched by `watchers` streams from `processes` client processes
    (remote clients, as in production: their decoding is not charged to the server's event loop)."""
    with tempfile.TemporaryDirectory() as tmp:
        suite = await _suite(tmp)
        try:
            stub = jobs_pb2_grpc.JobServiceStub(suite.context.channels.channel("jobs"))
            job = (await stub.CreateJob(jpb.CreateJobRequest(job=bench_job(0.3, 25)), timeout=10)).job
            outputs = [Path(tmp) / f"watch-{i}.txt" for i in range(processes)]
            clients = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--watch",
                    suite.context.settings.address_of("jobs"),
                    suite.context.settings.api_key or "",
                    job.job_id,
                    str(watchers // processes),
                    str(output),
                )
                for output in outputs
            ]
            for client in clients:
                await client.wait()
            samples = [float(x) for output in outputs for x in output.read_text().split()]
            return percentile(samples, 95) * 1000
        finally:
            await suite.stop(0)


async def jobs_accepted_and_progressing(count: int = 1000, limit_seconds: float = 30.0) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        suite = await _suite(tmp)
        try:
            stub = jobs_pb2_grpc.JobServiceStub(suite.context.channels.channel("jobs"))
            started = time.monotonic()
            ids = await _create_many(stub, count, tick=1.0)
            progressing = 0
            while time.monotonic() - started < limit_seconds:
                progressing = await _progressing(stub, ids)
                if progressing == count:
                    break
                await asyncio.sleep(0.5)
            return progressing
        finally:
            await suite.stop(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_process(data_dir: str, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    env.update(
        COHORT_DATA_DIR=data_dir,
        COHORT_JOBS_PORT=str(port),
        COHORT_AUTH_ENABLED="false",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")]),
    )
    out = open(Path(data_dir).with_suffix(".out"), "a")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, str(SERVE_WITH_TEST_RUNNER), RUNNER_HOOK, "jobs"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    return process


async def restart_resume_seconds(running: int = 100) -> float:
    """`cohort serve jobs` with `running` jobs, killed with SIGKILL and started again: seconds from
    the new process's launch until every job has progressed in its second attempt."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, port = str(Path(tmp) / "var"), _free_port()
        process = _start_process(data_dir, port)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = jobs_pb2_grpc.JobServiceStub(channel)
                await _wait_ready(stub)
                ids = await _create_many(stub, running, tick=0.2)
                while await _progressing(stub, ids) < running:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        finally:
            process.kill()
            process.wait()
        started = time.monotonic()
        process = _start_process(data_dir, port)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = jobs_pb2_grpc.JobServiceStub(channel)
                await _wait_ready(stub)
                before = {j.job_id: j.progress.iteration for j in await _list(stub)}
                while True:
                    jobs = await _list(stub)
                    resumed = [
                        j for j in jobs if j.progress.attempt == 2 and j.progress.iteration > before[j.job_id]
                    ]
                    if len(resumed) == running:
                        return time.monotonic() - started
                    await asyncio.sleep(0.05)
        finally:
            process.kill()
            process.wait()


async def _list(stub) -> list[jpb.Job]:
    return list((await stub.ListJobs(jpb.ListJobsRequest(page_size=1000), timeout=10)).jobs)


async def _wait_ready(stub) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            await stub.ListJobs(jpb.ListJobsRequest(page_size=1), timeout=1)
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def figures() -> list[Figure]:
    return [
        Figure(
            "jobs: GetJob p95, 150 jobs running (light test runner)",
            run_event_loop(get_job_p95_with_running_jobs()),
            "ms",
            10,
        ),
        Figure(
            "jobs: WatchJob 1,000 watchers, change-to-delivery p95 (light runner)",
            run_event_loop(watch_delivery_p95()),
            "ms",
            100,
        ),
        Figure(
            "jobs: of 1,000 accepted, progressing within 30 s (embedded, light runner)",
            run_event_loop(jobs_accepted_and_progressing()),
            "jobs",
            1000,
            lower_is_better=False,
        ),
        Figure(
            "jobs: restart with 100 running jobs, all resumed within (light runner)",
            run_event_loop(restart_resume_seconds()),
            "s",
            10,
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--watch"]:  # a client process of `watch_delivery_p95`
        address, api_key, job_id, count, output = sys.argv[2:7]
        delays = run_event_loop(_watch_samples(address, api_key, job_id, int(count)))
        Path(output).write_text(" ".join(f"{d:.6f}" for d in delays))
        sys.exit(0)
    for figure in figures():
        print(figure.line(), flush=True)
