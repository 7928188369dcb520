"""Jobs survive routine faults: failed attempts are retried from the checkpoint up to `max_attempts`,
a failure names the service that raised it, a FAILED job can be relaunched, leases are renewed only
while their runner lives, and the job manager's writes ride out a database blip.

Most jobs here run with `AttemptRunner` (the suite's `job_runner`): the thing under test is
the job manager. One test runs the real training runner against an agent runtime that is not there.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import grpc.aio
import pytest
from google.rpc import code_pb2, error_details_pb2
from integration.test_jobs_lifecycle import create, jobs, new_job, wait_for
from sqlalchemy.exc import OperationalError

from cohort.api.collector.v1 import collector_pb2
from cohort.api.jobs.v1 import jobs_pb2 as jpb
from cohort.platform.config import Settings
from cohort.platform.rpc.client import mark_failed_service
from cohort.services.jobs import failures
from cohort.services.jobs import scheduler as scheduler_module
from cohort.services.jobs.runner import JobHandle, JobOutcome, RunResult
from cohort.services.jobs.store import JobStore

Job = jpb.Job


def unavailable(service: str) -> grpc.aio.AioRpcError:
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "connection refused"
    )
    return mark_failed_service(error, service)


class AttemptRunner:
    """`flaky:<n>` fails its first n attempts with the trainer UNAVAILABLE, then ticks to the end;
    `bad-request` fails with INVALID_ARGUMENT from the trainer (final: no retry)."""

    def __init__(self, context) -> None:
        self.context = context

    async def run(self, handle: JobHandle) -> RunResult:
        behaviour, _, argument = handle.job.display_name.partition(":")
        if behaviour == "flaky" and handle.job.progress.attempt <= int(argument):
            raise unavailable("trainer")
        if behaviour == "bad-request":
            error = grpc.aio.AioRpcError(
                grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), grpc.aio.Metadata(), "no such head"
            )
            raise mark_failed_service(error, "trainer")
        while handle.job.progress.iteration < handle.job.spec.iterations:
            if handle.cancelled.is_set():
                return RunResult(JobOutcome.CANCELLED)
            await asyncio.sleep(0.01)
            await handle.update_progress(lambda p: setattr(p, "iteration", p.iteration + 1))
        return RunResult(JobOutcome.SUCCEEDED)

    async def evaluate(self, job, request):
        return jpb.Evaluation()


def make_runner(context) -> AttemptRunner:
    return AttemptRunner(context)


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(scheduler_module, "RETRY_BACKOFF_SECONDS", (0.02, 0.05))


@pytest.fixture
async def suite(start_suite_for, tmp_path, fast_retries):
    settings = Settings(data_dir=tmp_path / "var", auth_cache_seconds=0.0)
    return await start_suite_for(settings, ["jobs"], job_runner=make_runner)


def error_service(status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.metadata.get("service", "")
    return ""


async def test_a_transient_failure_is_retried_from_the_checkpoint_and_the_job_succeeds(suite):
    stub = jobs(suite)
    job = await create(stub, new_job("flaky:2", iterations=3))
    done = await wait_for(stub, job.job_id, lambda j: j.state in failures_terminal())
    assert done.state == Job.STATE_SUCCEEDED, done.error
    assert done.progress.attempt == 3 and done.progress.failed_attempts == 2
    assert done.progress.last_attempt_error.code == code_pb2.UNAVAILABLE
    assert done.progress.last_attempt_error.message.startswith("trainer: ")
    assert not done.HasField("error")


async def test_attempts_are_bounded_by_max_attempts_and_the_error_names_the_service(suite):
    stub = jobs(suite)
    job = await create(stub, new_job("flaky:5", iterations=2, max_attempts=2))
    failed = await wait_for(stub, job.job_id, lambda j: j.state in failures_terminal())
    assert failed.state == Job.STATE_FAILED
    assert failed.progress.attempt == 2 and failed.progress.failed_attempts == 2
    assert failed.error.code == code_pb2.UNAVAILABLE
    assert failed.error.message == "trainer: connection refused"
    assert error_service(failed.error) == "trainer"


async def test_a_bad_request_fails_at_once_without_retrying(suite):
    stub = jobs(suite)
    job = await create(stub, new_job("bad-request"))
    failed = await wait_for(stub, job.job_id, lambda j: j.state in failures_terminal())
    assert failed.state == Job.STATE_FAILED and failed.progress.attempt == 1
    assert failed.error.code == code_pb2.INVALID_ARGUMENT
    assert failed.error.message == "trainer: no such head"


async def test_a_failed_job_is_relaunched_from_its_checkpoint_with_fresh_attempts(suite):
    stub = jobs(suite)
    job = await create(stub, new_job("flaky:3", iterations=2, max_attempts=2))
    failed = await wait_for(stub, job.job_id, lambda j: j.state == Job.STATE_FAILED)
    assert failed.progress.failed_attempts == 2

    relaunched = (await stub.RelaunchJob(jpb.RelaunchJobRequest(job_id=job.job_id, request_id="r1"))).job
    assert relaunched.state == Job.STATE_QUEUED and not relaunched.HasField("error")
    assert relaunched.progress.failed_attempts == 0
    again = (await stub.RelaunchJob(jpb.RelaunchJobRequest(job_id=job.job_id, request_id="r1"))).job
    assert again.revision == relaunched.revision  # a retried request changes nothing

    done = await wait_for(stub, job.job_id, lambda j: j.state in failures_terminal())
    assert done.state == Job.STATE_SUCCEEDED and done.progress.attempt == 4
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.RelaunchJob(jpb.RelaunchJobRequest(job_id=job.job_id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "only a FAILED job can be relaunched" in refused.value.details()


async def test_a_cancel_during_the_retry_backoff_cancels_the_job(suite, monkeypatch):
    monkeypatch.setattr(scheduler_module, "RETRY_BACKOFF_SECONDS", (30.0, 30.0))
    stub = jobs(suite)
    job = await create(stub, new_job("flaky:5", max_attempts=5))
    await wait_for(stub, job.job_id, lambda j: j.state == Job.STATE_RUNNING and j.progress.attempt == 1)
    await asyncio.sleep(0.2)  # the attempt has failed and waits out its backoff
    started = time.monotonic()
    await stub.CancelJob(jpb.CancelJobRequest(job_id=job.job_id))
    cancelled = await wait_for(stub, job.job_id, lambda j: j.state == Job.STATE_CANCELLED)
    assert time.monotonic() - started < 5
    assert cancelled.progress.failed_attempts == 1


async def test_a_lease_is_not_renewed_once_its_runner_is_gone(monkeypatch, start_suite_for, tmp_path):
    """The runner dies and the job manager cannot record it (its database is down): the lease must
    expire so another worker takes the job over, not be renewed forever for a runner that is gone."""
    monkeypatch.setattr(scheduler_module, "WRITE_RETRY_SECONDS", 0.3)
    settings = Settings(data_dir=tmp_path / "var", auth_cache_seconds=0.0, job_lease_seconds=0.6)
    suite = await start_suite_for(settings, ["jobs"], job_runner=make_runner)

    async def database_down(*args, **kwargs):
        raise OperationalError("UPDATE jobs", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(JobStore, "finish", database_down)
    store = JobStore(suite.context.database)
    stub = jobs(suite)
    job = await create(stub, new_job("bad-request"))
    await wait_for(stub, job.job_id, lambda j: j.progress.attempt >= 1)  # this suite's worker has it
    key = (job.tenant_id, job.job_id)
    deadline = time.monotonic() + 10
    while True:
        claims, _ = await store.claim("another-worker", 30.0, 1, job_key=key)
        if claims:
            break
        assert time.monotonic() < deadline, "the dead runner's lease was renewed on and on"
        await asyncio.sleep(0.1)
    assert claims[0].change.job.progress.attempt >= 2  # taken over as a new attempt


async def test_progress_writes_ride_out_a_database_blip(suite, monkeypatch):
    real_write = JobStore.write_progress
    failures_left = [3]

    async def blip(self, *args, **kwargs):
        if failures_left[0]:
            failures_left[0] -= 1
            raise OperationalError("UPDATE jobs", {}, ConnectionRefusedError("connection refused"))
        return await real_write(self, *args, **kwargs)

    monkeypatch.setattr(JobStore, "write_progress", blip)
    stub = jobs(suite)
    job = await create(stub, new_job("tick", iterations=3))
    done = await wait_for(stub, job.job_id, lambda j: j.state in failures_terminal())
    assert done.state == Job.STATE_SUCCEEDED and failures_left == [0]
    assert done.progress.attempt == 1 and done.progress.failed_attempts == 0


async def test_a_real_failure_names_its_cause_and_service(start_suite_for, tmp_path, caplog, fast_retries):
    """The real training runner, an agent runtime nobody listens on: the job's error is the
    collector's FAILED_PRECONDITION, not an opaque INTERNAL, and sibling calls leave no tracebacks."""
    suite = await start_suite_for(Settings(data_dir=tmp_path / "var", auth_cache_seconds=0.0), ["all"])
    stub = jobs(suite)
    job = new_job("unreachable agent", iterations=1)
    job.spec.runtime.CopyFrom(
        collector_pb2.RuntimeSpec(grpc=collector_pb2.GrpcRuntime(address="127.0.0.1:1"))
    )
    job.spec.policy.new_policy.heads.add(name="next_tool", options=["a", "b"])
    with caplog.at_level(logging.INFO):
        created = await create(stub, job)
        failed = await wait_for(stub, created.job_id, lambda j: j.state in failures_terminal(), limit=30)
        await asyncio.sleep(0.5)  # time for stray sibling failures to be logged
    assert failed.state == Job.STATE_FAILED
    assert failed.error.code == code_pb2.FAILED_PRECONDITION, failed.error
    assert failed.error.message.startswith("collector: ") and "not reachable" in failed.error.message
    assert error_service(failed.error) == "collector"
    assert failed.progress.attempt == 1  # the job's own request is wrong: no retry
    assert "Channel is closed" not in caplog.text
    assert "exception was never retrieved" not in caplog.text


def failures_terminal() -> set[int]:
    return {Job.STATE_SUCCEEDED, Job.STATE_FAILED, Job.STATE_CANCELLED}


def test_failure_classification_is_final_only_for_the_requests_own_faults():
    for code in (code_pb2.UNAVAILABLE, code_pb2.INTERNAL, code_pb2.DEADLINE_EXCEEDED, code_pb2.ABORTED):
        assert not failures.is_final(failures.attempt_error(_rpc_error(code), "j", 1))
    for code in (code_pb2.INVALID_ARGUMENT, code_pb2.PERMISSION_DENIED, code_pb2.NOT_FOUND):
        assert failures.is_final(failures.attempt_error(_rpc_error(code), "j", 1))
    transient = OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    status = failures.attempt_error(transient, "j", 1)
    assert status.code == code_pb2.UNAVAILABLE and status.message.startswith("jobs: ")
    bug = failures.attempt_error(KeyError("secret"), "j", 4)
    assert bug.code == code_pb2.INTERNAL and "secret" not in bug.message and "attempt 4" in bug.message


def _rpc_error(code: int) -> grpc.aio.AioRpcError:
    status = next(s for s in grpc.StatusCode if s.value[0] == code)
    return grpc.aio.AioRpcError(status, grpc.aio.Metadata(), grpc.aio.Metadata(), "x")
