"""Keepalive between Cohort clients and servers: long quiet streams and short calls survive pinging
under CPU load, a refused keepalive is told apart and retried, and `cohort jobs watch` re-opens.

The server and the channels are built with the production options (`start_server`,
`channel_options`), with a one-second interval so that a stream outlives several pings within
seconds (gRPC sends a client's pings at most once a second anyway).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.cli import jobs as cli_jobs
from cohort.cli.jobs import follow_job
from cohort.platform.config import Settings
from cohort.platform.rpc.client import ChannelPool, channel_options
from cohort.platform.rpc.server import RunningServer, start_server
from cohort.platform.transient import (
    IDEMPOTENT_RETRYABLE_CODES,
    RETRYABLE_CODES,
    is_keepalive_refusal,
    is_retryable_rpc_error,
)

KEEPALIVE_SECONDS = 1.0
HOLD_SECONDS = 6 * KEEPALIVE_SECONDS
SERVING = health_pb2.HealthCheckResponse.SERVING


def _spin(seconds: float, started) -> None:
    started.set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@contextmanager
def _busy_processes(count: int, seconds: float) -> Iterator[None]:
    """`count` processes spinning on the CPU (each stops by itself after `seconds` at the latest)."""
    context = multiprocessing.get_context("spawn")  # forking a process that runs gRPC is unsafe
    started = [context.Event() for _ in range(count)]
    workers = [context.Process(target=_spin, args=(seconds, event), daemon=True) for event in started]
    for worker in workers:
        worker.start()
    try:
        for event in started:
            assert event.wait(30), "a busy process did not start"
        yield
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(5)


async def _start(keepalive_seconds: float) -> RunningServer:
    settings = Settings(auth_enabled=False, keepalive_seconds=keepalive_seconds)
    return await start_server(settings, "jobs", [], authenticator=None, port=0)


def _channel(port: int, keepalive_seconds: float, *, ping_when_idle: bool = False) -> grpc.aio.Channel:
    options = channel_options(Settings(keepalive_seconds=keepalive_seconds))
    if ping_when_idle:
        # Every ping then reaches the server with no call open, as a ping does that crosses the end
        # of a call: the race, made certain.
        options = [(name, value) for name, value in options if name != "grpc.keepalive_permit_without_calls"]
        options.append(("grpc.keepalive_permit_without_calls", 1))
    # Channels with equal options would share one connection; each of these needs its own.
    options.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)


async def _quiet_stream(channel: grpc.aio.Channel, seconds: float) -> grpc.StatusCode:
    """A health watch held `seconds`: the server sends its status once, then nothing, so only
    keepalive pings cross the connection. Returns how the stream ended."""
    statuses = []
    try:
        async for response in health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=seconds
        ):
            statuses.append(response.status)
    except grpc.aio.AioRpcError as exc:
        assert statuses == [SERVING]
        if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
        return exc.code()
    raise AssertionError("the watch ended before its deadline")


async def _calls_starting_and_ending(channel: grpc.aio.Channel, seconds: float) -> int:
    """Unary calls and short watches, one after another with gaps, for `seconds`: the connection
    keeps going idle just as calls end, with pings in flight. Returns how many calls were made."""
    rng = random.Random(20)
    stub = health_pb2_grpc.HealthStub(channel)
    calls = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert response.status == SERVING
        await _quiet_stream(channel, rng.uniform(0.05, 1.5) * KEEPALIVE_SECONDS)
        calls += 2
        await asyncio.sleep(rng.choice((0.0, 0.01, 0.1, 1.2 * KEEPALIVE_SECONDS)))
    return calls


async def _connection_kept_while_idle(channel: grpc.aio.Channel, seconds: float) -> bool:
    """Whether the connection one call opened is still the same after `seconds` without calls (a
    GOAWAY would take the channel out of READY, and its next call would quietly reconnect)."""
    stub = health_pb2_grpc.HealthStub(channel)
    await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    try:
        await asyncio.wait_for(channel.wait_for_state_change(grpc.ChannelConnectivity.READY), seconds)
    except TimeoutError:
        return True
    return False


@pytest.mark.timeout(60)
async def test_long_quiet_stream_and_short_calls_survive_keepalive_under_cpu_load():
    running = await _start(KEEPALIVE_SECONDS)
    try:
        with _busy_processes(2, seconds=HOLD_SECONDS + 20):
            async with (
                _channel(running.port, KEEPALIVE_SECONDS) as streaming,
                _channel(running.port, KEEPALIVE_SECONDS) as calling,
                _channel(running.port, KEEPALIVE_SECONDS, ping_when_idle=True) as idle,
            ):
                ended, calls, idle_kept = await asyncio.gather(
                    _quiet_stream(streaming, HOLD_SECONDS),
                    _calls_starting_and_ending(calling, HOLD_SECONDS),
                    _connection_kept_while_idle(idle, HOLD_SECONDS),
                )
    finally:
        await running.stop(0)
    assert ended is grpc.StatusCode.DEADLINE_EXCEEDED  # held to its end, never cut off
    assert calls >= 6
    assert idle_kept, "the server closed a connection over pings that arrived with no call open"


@pytest.mark.timeout(60)
async def test_client_pinging_faster_than_the_server_permits_is_refused_and_retryable():
    # This server tolerates pings every 10 s; the client sends one every second.
    running = await _start(keepalive_seconds=30.0)
    try:
        async with _channel(running.port, KEEPALIVE_SECONDS) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _quiet_stream(channel, seconds=20.0)
    finally:
        await running.stop(0)
    refusal = caught.value
    assert "too many pings" in f"{refusal.details()} {refusal.debug_error_string()}".lower()
    assert is_keepalive_refusal(refusal)
    assert is_retryable_rpc_error(refusal, RETRYABLE_CODES)


@pytest.mark.parametrize(
    ("code", "details", "retryable"),
    [
        (grpc.StatusCode.UNAVAILABLE, "Too many pings", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Too Many Pings", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "GOAWAY received; Debug Text: too_many_pings", True),
        (grpc.StatusCode.UNAVAILABLE, "Connection refused", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "the tenant's monthly budget is spent", False),
        (grpc.StatusCode.INVALID_ARGUMENT, "too many pings in spec.labels", False),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", False),
    ],
)
def test_a_keepalive_refusal_is_retried_and_real_limits_are_not(code, details, retryable):
    error = grpc.aio.AioRpcError(code, details=details)
    assert is_retryable_rpc_error(error, RETRYABLE_CODES) is retryable


def test_safe_calls_are_also_retried_past_their_deadline():
    error = grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, details="Deadline Exceeded")
    assert is_retryable_rpc_error(error, IDEMPOTENT_RETRYABLE_CODES)
    assert not is_keepalive_refusal(error)


class _FlakyJobWatch(jobs_pb2_grpc.JobServiceServicer):
    """Each WatchJob stream sends the snapshots after the requested revision, then fails as
    `failures` says, until it has none left; then it ends with the job succeeded."""

    def __init__(self, failures: list[tuple[grpc.StatusCode, str]]) -> None:
        self.failures = list(failures)
        self.after_revisions: list[int] = []
        self.revision = 0

    def _snapshot(self, state: int) -> jobs_pb2.WatchJobResponse:
        self.revision += 1
        job = jobs_pb2.Job(job_id="j1", state=state, revision=self.revision)
        job.progress.iteration = self.revision
        return jobs_pb2.WatchJobResponse(job=job)

    async def WatchJob(self, request, context):
        self.after_revisions.append(request.after_revision)
        if not self.failures:
            yield self._snapshot(jobs_pb2.Job.STATE_SUCCEEDED)
            return
        yield self._snapshot(jobs_pb2.Job.STATE_RUNNING)
        code, details = self.failures.pop(0)
        await context.abort(code, details)


async def _watch(servicer: _FlakyJobWatch) -> jobs_pb2.Job | None:
    server = grpc.aio.server()
    jobs_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await follow_job(jobs_pb2_grpc.JobServiceStub(channel), "j1", retry_seconds=10.0)
    finally:
        await server.stop(0)


async def test_job_watch_reopens_after_the_last_revision_it_showed():
    servicer = _FlakyJobWatch(
        [
            (grpc.StatusCode.UNAVAILABLE, "Too many pings"),
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "Too many pings"),
            (grpc.StatusCode.UNAVAILABLE, "Socket closed"),
        ]
    )
    final = await _watch(servicer)
    assert final is not None and final.state == jobs_pb2.Job.STATE_SUCCEEDED
    assert servicer.after_revisions == [0, 1, 2, 3]


async def test_job_watch_gives_up_on_a_real_error():
    servicer = _FlakyJobWatch([(grpc.StatusCode.PERMISSION_DENIED, "not your job")])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _watch(servicer)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert servicer.after_revisions == [0]


class _SlowJobWatch(jobs_pb2_grpc.JobServiceServicer):
    """A job that takes `seconds`: a snapshot every 0.1 s, then SUCCEEDED."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.after_revisions: list[int] = []
        self.started = 0.0

    async def WatchJob(self, request, context):
        self.after_revisions.append(request.after_revision)
        loop = asyncio.get_running_loop()
        self.started = self.started or loop.time()
        revision = request.after_revision
        while loop.time() - self.started < self.seconds:
            revision += 1
            job = jobs_pb2.Job(job_id="j1", state=jobs_pb2.Job.STATE_RUNNING, revision=revision)
            job.progress.iteration = revision
            yield jobs_pb2.WatchJobResponse(job=job)
            await asyncio.sleep(0.1)
        done = jobs_pb2.Job(job_id="j1", state=jobs_pb2.Job.STATE_SUCCEEDED, revision=revision + 1)
        yield jobs_pb2.WatchJobResponse(job=done)


async def _watch_through_a_pool(servicer, rpc_timeout_seconds: float) -> jobs_pb2.Job | None:
    """`follow_job` over a `ChannelPool` channel, which gives calls without a deadline the default."""
    server = grpc.aio.server()
    jobs_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = Settings(addresses={"jobs": f"127.0.0.1:{port}"}, rpc_timeout_seconds=rpc_timeout_seconds)
    try:
        async with ChannelPool(settings) as pool:
            stub = pool.stub("jobs", jobs_pb2_grpc.JobServiceStub)
            return await follow_job(stub, "j1", retry_seconds=10.0)
    finally:
        await server.stop(0)


async def test_a_job_watch_is_not_cut_by_the_channels_default_deadline():
    servicer = _SlowJobWatch(seconds=1.2)
    final = await _watch_through_a_pool(servicer, rpc_timeout_seconds=0.3)
    assert final is not None and final.state == jobs_pb2.Job.STATE_SUCCEEDED
    assert servicer.after_revisions == [0]  # one call, alive past the 0.3 s default


async def test_a_job_watch_outlives_its_own_deadline_by_reopening_quietly(monkeypatch, capsys):
    monkeypatch.setattr(cli_jobs, "WATCH_SECONDS", 0.4)
    servicer = _SlowJobWatch(seconds=1.5)
    final = await _watch_through_a_pool(servicer, rpc_timeout_seconds=30)
    assert final is not None and final.state == jobs_pb2.Job.STATE_SUCCEEDED
    assert len(servicer.after_revisions) >= 3  # re-opened at each deadline
    assert servicer.after_revisions == sorted(set(servicer.after_revisions))  # nothing shown twice
    assert "watch interrupted" not in capsys.readouterr().out
