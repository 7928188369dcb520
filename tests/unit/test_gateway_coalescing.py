"""CoalescedRead: identical concurrent reads share a backend call, and no answer predates its request."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from cohort.api.jobs.v1 import jobs_pb2
from cohort.services.gateway.coalescing import CoalescedRead
from cohort.services.gateway.transcoding import build_routes, read_paths

AUTH = (("authorization", "Bearer a"),)


class FakeJobs:
    """A backend whose GetJob reads `state` when the call starts and answers when `release` is set."""

    def __init__(self) -> None:
        self.state = 1
        self.calls: list[tuple[str, tuple]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_with: grpc.aio.AioRpcError | None = None

    def __call__(self, request, *, metadata=(), timeout=None):
        self.calls.append((request.job_id, metadata))
        return FakeCall(self, request)


class FakeCall:
    def __init__(self, backend: FakeJobs, request) -> None:
        self.backend = backend
        self.read = backend.state
        self.request = request

    def __await__(self):
        return self._run().__await__()

    async def _run(self):
        await self.backend.release.wait()
        if self.backend.fail_with is not None:
            raise self.backend.fail_with
        return jobs_pb2.GetJobResponse(job=jobs_pb2.Job(job_id=self.request.job_id, revision=self.read))

    async def trailing_metadata(self):
        return (("x-request-id", f"read-{self.read}"),)


def _error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="no")


async def _until(condition) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def _revision(read: CoalescedRead, job_id: str = "j", metadata=AUTH, deadline=5.0) -> int:
    response = await read(jobs_pb2.GetJobRequest(job_id=job_id), metadata=metadata, timeout=deadline)
    return response.job.revision


async def test_requests_arriving_during_a_call_share_the_next_one():
    backend = FakeJobs()
    read = CoalescedRead(backend)
    backend.release.clear()
    first = asyncio.ensure_future(_revision(read))
    await _until(lambda: len(backend.calls) == 1)
    # Written after the running call read the state: the requests that arrive now must see it.
    backend.state = 2
    joiners = [asyncio.ensure_future(_revision(read)) for _ in range(50)]
    await asyncio.sleep(0)
    backend.release.set()
    assert await first == 1
    assert await asyncio.gather(*joiners) == [2] * 50
    assert len(backend.calls) == 2


async def test_sequential_reads_each_call_the_backend():
    backend = FakeJobs()
    read = CoalescedRead(backend)
    for state in (1, 2, 3):
        backend.state = state
        assert await _revision(read) == state
    assert len(backend.calls) == 3


async def test_different_callers_jobs_and_deadlines_never_share():
    backend = FakeJobs()
    read = CoalescedRead(backend)
    backend.release.clear()
    waiting = [
        asyncio.ensure_future(_revision(read)),
        asyncio.ensure_future(_revision(read, metadata=(("authorization", "Bearer b"),))),
        asyncio.ensure_future(_revision(read, job_id="other")),
        asyncio.ensure_future(_revision(read, deadline=9.0)),
    ]
    await asyncio.sleep(0)
    backend.release.set()
    await asyncio.gather(*waiting)
    assert len(backend.calls) == 4
    assert {metadata for _, metadata in backend.calls} == {AUTH, (("authorization", "Bearer b"),)}


async def test_a_failure_reaches_every_waiter_and_the_next_read_calls_again():
    backend = FakeJobs()
    read = CoalescedRead(backend)
    backend.release.clear()
    backend.fail_with = _error(grpc.StatusCode.NOT_FOUND)
    first = asyncio.ensure_future(_revision(read))
    await asyncio.sleep(0)
    joiners = [asyncio.ensure_future(_revision(read)) for _ in range(3)]
    await asyncio.sleep(0)
    backend.release.set()
    for waiter in (first, *joiners):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await waiter
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    backend.fail_with = None
    assert await _revision(read) == 1


async def test_a_caller_that_goes_away_does_not_cancel_the_shared_call():
    backend = FakeJobs()
    read = CoalescedRead(backend)
    backend.release.clear()
    leaving = asyncio.ensure_future(_revision(read))
    staying = asyncio.ensure_future(_revision(read))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    backend.release.set()
    assert await staying == 1
    assert leaving.cancelled()


async def test_a_waiter_answers_within_its_own_deadline():
    backend = FakeJobs()
    read = CoalescedRead(backend)
    backend.release.clear()
    asyncio.ensure_future(_revision(read, deadline=30.0))
    await asyncio.sleep(0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _revision(read, deadline=0.05)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    backend.release.set()


async def test_the_shared_call_trailers_are_each_callers():
    backend = FakeJobs()
    read = CoalescedRead(backend)
    call = read(jobs_pb2.GetJobRequest(job_id="j"), metadata=AUTH, timeout=5.0)
    assert (await call).job.revision == 1
    assert await call.trailing_metadata() == (("x-request-id", "read-1"),)


def test_only_unary_rpcs_bound_to_get_are_coalesced():
    reads = read_paths(build_routes())
    assert "/cohort.api.jobs.v1.JobService/GetJob" in reads
    assert "/cohort.api.jobs.v1.JobService/ListJobs" in reads
    assert "/cohort.api.jobs.v1.JobService/WatchJob" not in reads  # a stream
    assert "/cohort.api.jobs.v1.JobService/CancelJob" not in reads  # POST: has effects
    assert "/cohort.api.jobs.v1.JobService/CreateJob" not in reads


async def test_requests_of_one_loop_turn_share_one_call_and_an_idle_key_does_not_wait():
    backend = FakeJobs()
    read = CoalescedRead(backend)
    assert await asyncio.gather(*(_revision(read) for _ in range(10))) == [1] * 10
    assert len(backend.calls) == 1
    assert read._keys == {}  # nothing is kept for a key once its calls have ended
