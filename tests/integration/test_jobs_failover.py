"""Job managers killed with SIGKILL: their jobs are taken over, none lost, none run twice at once.

Each job manager is a real `cohort serve jobs` process running `FailoverRunner` (started through
tests/serve_with_test_runner.py). After every progress write that succeeded, the runner appends
`<job> <pid> <fencing token> <iteration>` to a shared log (O_APPEND, one write per line): two
attempts of one job running at once would show up as a token going down or an iteration repeating.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import grpc
import pytest

from cohort.api.collector.v1 import collector_pb2
from cohort.api.jobs.v1 import jobs_pb2 as jpb
from cohort.api.jobs.v1 import jobs_pb2_grpc
from cohort.services.jobs.runner import JobHandle, JobOutcome, RunResult

Job = jpb.Job
LOG_VARIABLE = "COHORT_TEST_JOB_LOG"
TICK_SECONDS = 0.1
TESTS = Path(__file__).resolve().parent
SERVE_WITH_TEST_RUNNER = TESTS.parent / "serve_with_test_runner.py"


class FailoverRunner:
    def __init__(self, log_path: str) -> None:
        self._log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def run(self, handle: JobHandle) -> RunResult:
        while handle.job.progress.iteration < handle.job.spec.iterations:
            if handle.cancelled.is_set():
                return RunResult(JobOutcome.CANCELLED)
            await asyncio.sleep(TICK_SECONDS)
            job = await handle.update_progress(lambda p: setattr(p, "iteration", p.iteration + 1))
            line = f"{job.job_id} {os.getpid()} {handle.fencing_token} {job.progress.iteration}\n"
            os.write(self._log, line.encode())
        return RunResult(JobOutcome.SUCCEEDED)

    async def evaluate(self, job, request):
        return jpb.Evaluation()


def make_runner(context) -> FailoverRunner:
    return FailoverRunner(os.environ[LOG_VARIABLE])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JobManagerProcess:
    def __init__(self, data_dir: Path, log: Path, port: int, **env: str) -> None:
        self.port = port
        environment = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
        environment.update(
            COHORT_DATA_DIR=str(data_dir),
            COHORT_JOBS_PORT=str(port),
            COHORT_AUTH_ENABLED="false",
            PYTHONPATH=os.pathsep.join([str(TESTS), environment.get("PYTHONPATH", "")]),
            **{LOG_VARIABLE: str(log)},
            **env,
        )
        # Output goes to a file: an undrained pipe would block the process once it filled up.
        self.output = data_dir.with_name(data_dir.name + ".out")
        self._output_file = self.output.open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(SERVE_WITH_TEST_RUNNER), "test_jobs_failover:make_runner", "jobs"],
            env=environment,
            stdout=self._output_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while "Ctrl-C or SIGTERM" not in self.output.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the job manager did not start:\n" + self.output.read_text())
            time.sleep(0.05)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._output_file.close()


def job(iterations: int) -> jpb.Job:
    return jpb.Job(
        spec=jpb.JobSpec(
            runtime=collector_pb2.RuntimeSpec(toolbench=collector_pb2.ToolbenchRuntime()),
            dataset=jpb.DatasetSpec(toolbench=jpb.ToolbenchQueries()),
            policy=jpb.PolicySource(new_policy=jpb.NewPolicy()),
            iterations=iterations,
        )
    )


async def all_jobs(stub) -> list[jpb.Job]:
    return list((await stub.ListJobs(jpb.ListJobsRequest(page_size=1000), timeout=5)).jobs)


async def wait_until(stub, predicate, limit: float) -> list[jpb.Job]:
    deadline = time.monotonic() + limit
    jobs: list[jpb.Job] = []
    while True:
        try:
            jobs = await all_jobs(stub)
            if predicate(jobs):
                return jobs
        except grpc.aio.AioRpcError:
            pass
        summary = sorted((Job.State.Name(j.state), j.progress.iteration, j.progress.attempt) for j in jobs)
        assert time.monotonic() < deadline, f"condition not reached in time; jobs: {summary}"
        await asyncio.sleep(0.05)


def read_log(log: Path) -> dict[str, list[tuple[int, int, int]]]:
    entries: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for line in log.read_text().splitlines():
        job_id, pid, token, iteration = line.split()
        entries[job_id].append((int(pid), int(token), int(iteration)))
    return entries


def check_no_attempt_overlapped(log: Path, finished: list[jpb.Job], iterations: int) -> dict:
    entries = read_log(log)
    assert set(entries) == {j.job_id for j in finished}
    for job_id, writes in entries.items():
        tokens = [token for _, token, _ in writes]
        done = [iteration for _, _, iteration in writes]
        assert tokens == sorted(tokens), f"{job_id}: an older attempt wrote after a newer one: {writes}"
        assert done == sorted(set(done)), f"{job_id}: an iteration was written twice: {writes}"
        assert done[-1] == iterations
    for j in finished:
        assert j.state == Job.STATE_SUCCEEDED and j.progress.iteration == iterations
    return entries


async def test_kill_9_with_20_running_jobs_then_restart(tmp_path):
    data_dir, log = tmp_path / "var", tmp_path / "progress.log"
    port = _free_port()
    iterations = 20
    first = JobManagerProcess(data_dir, log, port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            created = [
                (await stub.CreateJob(jpb.CreateJobRequest(job=job(iterations)), timeout=10)).job
                for _ in range(20)
            ]
            await wait_until(
                stub,
                lambda js: all(j.state == Job.STATE_RUNNING and j.progress.iteration >= 3 for j in js),
                15,
            )
            first.kill()
    finally:
        first.close()
    at_kill = {j.job_id: j.progress.iteration for j in created}

    second = JobManagerProcess(data_dir, log, port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            finished = await wait_until(stub, lambda js: all(j.state == Job.STATE_SUCCEEDED for j in js), 20)
    finally:
        second.close()
    assert len(finished) == len(at_kill) == 20
    entries = check_no_attempt_overlapped(log, finished, iterations)
    for j in finished:
        assert j.progress.attempt == 2  # every job was running when the process died
        assert {pid for pid, _, _ in entries[j.job_id]} == {first.process.pid, second.process.pid}


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_replicas_on_redis_and_postgres_share_50_jobs_and_survive_a_kill(
    tmp_path, postgres_url, redis_url
):
    import asyncpg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    log = tmp_path / "progress.log"
    shared = dict(
        COHORT_DATABASE_URL=postgres_url,
        COHORT_DATABASE_SCHEMA=schema,
        COHORT_REDIS_URL=redis_url,
        COHORT_JOB_LEASE_SECONDS="1.5",
        COHORT_MAX_RUNNING_JOBS="30",
    )
    iterations = 15
    replicas: list[JobManagerProcess] = []
    try:
        replicas.append(JobManagerProcess(tmp_path / "a", log, _free_port(), **shared))
        replicas.append(JobManagerProcess(tmp_path / "b", log, _free_port(), **shared))
        survivor, victim = replicas
        async with grpc.aio.insecure_channel(f"127.0.0.1:{survivor.port}") as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            for _ in range(50):
                await stub.CreateJob(jpb.CreateJobRequest(job=job(iterations)), timeout=10)

            def both_replicas_progressing(_jobs) -> bool:
                pids = (
                    {pid for writes in read_log(log).values() for pid, _, _ in writes} if log.exists() else ()
                )
                return {survivor.process.pid, victim.process.pid} <= set(pids)

            await wait_until(stub, both_replicas_progressing, 15)
            victim.kill()
            finished = await wait_until(stub, lambda js: all(j.state == Job.STATE_SUCCEEDED for j in js), 25)

            # The victim's watchers are gone; a watcher on the survivor sees a job to its end.
            last = finished[0]
            stream = stub.WatchJob(jpb.WatchJobRequest(job_id=last.job_id))
            assert (await asyncio.wait_for(stream.read(), 5)).job.state == Job.STATE_SUCCEEDED
    finally:
        for replica in replicas:
            replica.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
    assert len(finished) == 50
    entries = check_no_attempt_overlapped(log, finished, iterations)
    taken_over = [
        j
        for j in finished
        if victim.process.pid in {pid for pid, _, _ in entries[j.job_id]}
        and j.progress.iteration > max(i for p, _, i in entries[j.job_id] if p == victim.process.pid)
    ]
    assert taken_over, "no job of the killed replica was finished by the survivor"
    for j in taken_over:
        assert j.progress.attempt >= 2
        assert entries[j.job_id][-1][0] == survivor.process.pid
