"""The collector's trajectory-store RPCs over real gRPC, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import pytest
from bench.trajectory_store import make_trajectory
from google.rpc import error_details_pb2
from suite_calls import tenant_key

from cohort.api.collector.v1 import collector_pb2 as cpb
from cohort.api.collector.v1 import collector_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.platform.rpc.client import bad_request
from cohort.sdk.trajectories import ATTEMPT_LABEL

SECRET = "sk-proj-" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6"


@pytest.fixture
def start(start_suite_for, database_settings):
    return lambda **overrides: start_suite_for(
        database_settings.with_overrides(**overrides), ["collector", "jobs"]
    )


@pytest.fixture
async def suite(start):
    return await start()


def collector(suite) -> collector_pb2_grpc.CollectorServiceStub:
    """A stub acting as the suite's admin key (tenant `default`)."""
    return collector_pb2_grpc.CollectorServiceStub(suite.context.channels.channel("collector"))


def traj(i: int, **fields) -> tpb.Trajectory:
    t = make_trajectory(i, **fields)
    if "trajectory_id" not in fields:
        t.trajectory_id = f"t-{i}"
    return t


async def stream(items):
    for item in items:
        yield cpb.IngestTrajectoriesRequest(trajectory=item)


async def ingest(stub, items, **kwargs) -> cpb.IngestTrajectoriesResponse:
    return await stub.IngestTrajectories(stream(items), timeout=30, **kwargs)


async def export(stub, request, **kwargs) -> list[cpb.ExportTrajectoriesResponse]:
    return [record async for record in stub.ExportTrajectories(request, timeout=30, **kwargs)]


def failure_detail(failure: cpb.IngestFailure, kind):
    for detail in failure.status.details:
        message = kind()
        if detail.Unpack(message):
            return message
    return None


async def test_ingest_reports_stored_duplicates_and_failures_in_stream_order(suite):
    stub = collector(suite)
    first = await ingest(stub, [traj(0), traj(1), traj(2)])
    assert (first.stored_count, first.duplicate_count, list(first.failures)) == (3, 0, [])
    assert list(first.trajectory_ids) == ["t-0", "t-1", "t-2"]

    unnamed = make_trajectory(3)
    bad = traj(4, reward=float("nan"))
    changed = traj(1, task="a different task under an existing id")
    second = await ingest(stub, [traj(0), unnamed, bad, changed, traj(5)])
    assert second.stored_count == 2
    assert second.duplicate_count == 1
    assert [f.index for f in second.failures] == [2, 3]
    invalid, exists = second.failures
    assert invalid.trajectory_id == "t-4"
    assert invalid.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert (
        failure_detail(invalid, error_details_pb2.BadRequest).field_violations[0].field == "trajectory.reward"
    )
    assert exists.trajectory_id == "t-1"
    assert exists.status.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert "t-1" in exists.status.message
    assert failure_detail(exists, error_details_pb2.ErrorInfo).reason == "ALREADY_EXISTS"
    assigned = second.trajectory_ids[1]
    assert list(second.trajectory_ids) == ["t-0", assigned, "t-5"]
    assert uuid.UUID(assigned).version == 7

    got = await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="t-1"), timeout=5)
    assert got.trajectory.task == make_trajectory(1).task  # nothing overwritten
    assert got.trajectory.tenant_id == "default"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="t-4"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_long_stream_is_stored_in_batches(suite):
    stub = collector(suite)
    response = await ingest(stub, [traj(i) for i in range(700)])
    assert response.stored_count == 700
    assert list(response.trajectory_ids) == [f"t-{i}" for i in range(700)]
    exported = await export(stub, cpb.ExportTrajectoriesRequest(format=cpb.EXPORT_FORMAT_COHORT_JSONL))
    assert len(exported) == 700


async def test_secrets_are_redacted_on_ingest(suite):
    stub = collector(suite)
    t = traj(1, task=f"use the key {SECRET} to call the API")
    t.agent_steps[0].tool_results[0].result = f"export OPENAI_API_KEY={SECRET}"
    await ingest(stub, [t])
    got = (await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="t-1"), timeout=5)).trajectory
    assert SECRET not in str(got)
    assert got.task.startswith("use the key ")
    records = await export(stub, cpb.ExportTrajectoriesRequest(format=cpb.EXPORT_FORMAT_COHORT_JSONL))
    assert SECRET not in records[0].record


async def test_tenants_never_see_each_others_trajectories(suite):
    acme = await tenant_key(suite, "acme")
    globex = await tenant_key(suite, "globex")
    stub = collector(suite)
    response = await ingest(stub, [traj(1), traj(2, task="acme secret plans")], metadata=acme)
    assert response.stored_count == 2
    own = await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="t-1"), metadata=acme, timeout=5)
    assert own.trajectory.tenant_id == "acme"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="t-1"), metadata=globex, timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="t-404"), metadata=globex, timeout=5)
    assert caught.value.details().replace("t-1", "X") == missing.value.details().replace("t-404", "X")

    for request in (
        cpb.SearchTrajectoriesRequest(),
        cpb.SearchTrajectoriesRequest(text_query="secret plans"),
        cpb.SearchTrajectoriesRequest(similar_to_text="acme secret plans"),
    ):
        found = await stub.SearchTrajectories(request, metadata=globex, timeout=5)
        assert list(found.hits) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SearchTrajectories(
            cpb.SearchTrajectoriesRequest(similar_to_trajectory_id="t-1"), metadata=globex, timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert (
        await export(stub, cpb.ExportTrajectoriesRequest(format=cpb.EXPORT_FORMAT_TRAE_JSON), metadata=globex)
        == []
    )

    # The same id in another tenant is another trajectory, not a conflict.
    theirs = await ingest(stub, [traj(1, task="globex's t-1")], metadata=globex)
    assert theirs.stored_count == 1
    mine = await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="t-1"), metadata=acme, timeout=5)
    assert mine.trajectory.task == make_trajectory(1).task


async def test_search_filters_paging_and_views(suite):
    stub = collector(suite)
    items = [traj(i) for i in range(9)]
    for i, t in enumerate(items):
        t.agent.name = "alpha" if i < 6 else "beta"
        t.success = i % 3 == 0
        t.reward = i / 10
    await ingest(stub, items)

    request = cpb.SearchTrajectoriesRequest(
        filter=cpb.TrajectoryFilter(agent_name="alpha", min_reward=0.1, labels={"split": "train"}),
        page_size=2,
    )
    seen: list[str] = []
    while True:
        page = await stub.SearchTrajectories(request, timeout=5)
        assert len(page.hits) <= 2
        seen.extend(hit.trajectory.trajectory_id for hit in page.hits)
        for hit in page.hits:
            assert len(hit.trajectory.agent_steps) == 0  # BASIC by default
            assert hit.score == 0
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert sorted(seen) == ["t-1", "t-2", "t-3", "t-4"]  # t-0 fails min_reward, t-5 is heldout

    success = await stub.SearchTrajectories(
        cpb.SearchTrajectoriesRequest(
            filter=cpb.TrajectoryFilter(success=True, termination_reasons=[tpb.TERMINATION_REASON_COMPLETED]),
            view=cpb.TRAJECTORY_VIEW_FULL,
        ),
        timeout=5,
    )
    assert sorted(h.trajectory.trajectory_id for h in success.hits) == ["t-0", "t-3", "t-6"]
    assert all(len(h.trajectory.agent_steps) == 5 for h in success.hits)

    ranked = await stub.SearchTrajectories(
        cpb.SearchTrajectoriesRequest(similar_to_trajectory_id="t-0", page_size=3), timeout=5
    )
    assert len(ranked.hits) == 3 and ranked.next_page_token
    assert ranked.hits[0].score >= ranked.hits[1].score >= ranked.hits[2].score > 0

    text = await stub.SearchTrajectories(cpb.SearchTrajectoriesRequest(text_query="Paris"), timeout=5)
    assert {h.trajectory.trajectory_id for h in text.hits} == {"t-0", "t-8"}  # CITIES[0] is Paris

    for request, field in (
        (cpb.SearchTrajectoriesRequest(page_token="not-a-token"), "page_token"),
        (cpb.SearchTrajectoriesRequest(page_size=5000), "page_size"),
        (
            cpb.SearchTrajectoriesRequest(filter=cpb.TrajectoryFilter(min_reward=1, max_reward=0)),
            "filter.min_reward",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SearchTrajectories(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request(caught.value).field_violations[0].field == field


async def test_export_in_each_format(suite):
    stub = collector(suite)
    await ingest(stub, [traj(i) for i in range(5)])
    jsonl = await export(stub, cpb.ExportTrajectoriesRequest(format=cpb.EXPORT_FORMAT_COHORT_JSONL))
    assert [r.trajectory_id for r in jsonl] == sorted(r.trajectory_id for r in jsonl) or len(jsonl) == 5
    for record in jsonl:
        assert "\n" not in record.record
        document = json.loads(record.record)
        assert document["trajectoryId"] == record.trajectory_id
        assert record.create_time.seconds > 0

    trae = await export(stub, cpb.ExportTrajectoriesRequest(format=cpb.EXPORT_FORMAT_TRAE_JSON, limit=2))
    assert len(trae) == 2
    for record in trae:
        document = json.loads(record.record)
        assert document["task"].startswith("Plan a trip to")
        assert len(document["agent_steps"]) == 5
        assert "llm_interactions" in document

    chat = await export(
        stub,
        cpb.ExportTrajectoriesRequest(
            format=cpb.EXPORT_FORMAT_OPENAI_CHAT_JSONL,
            filter=cpb.TrajectoryFilter(labels={"split": "heldout"}),
        ),
    )
    assert [r.trajectory_id for r in chat] == ["t-0"]
    document = json.loads(chat[0].record)
    assert "\n" not in chat[0].record
    assert isinstance(document["messages"], list) and document["messages"]


@pytest.mark.parametrize("export_format", [cpb.EXPORT_FORMAT_UNSPECIFIED, 99])
async def test_an_unknown_export_format_is_invalid(suite, export_format):
    stub = collector(suite)
    await ingest(stub, [traj(1)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await export(stub, cpb.ExportTrajectoriesRequest(format=export_format))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(caught.value).field_violations[0].field == "format"


async def test_an_oversize_message_is_rejected_without_losing_earlier_items(start):
    suite = await start(max_message_bytes=64 * 1024)
    stub = collector(suite)
    huge = traj(999, task="x" * (100 * 1024))

    async def requests():
        for i in range(300):  # more than one batch before the oversize item
            yield cpb.IngestTrajectoriesRequest(trajectory=traj(i))
        await asyncio.sleep(0.3)
        yield cpb.IngestTrajectoriesRequest(trajectory=huge)
        yield cpb.IngestTrajectoriesRequest(trajectory=traj(1000))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IngestTrajectories(requests(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ids = await _stored_ids(stub, expect=300)
    assert ids == {f"t-{i}" for i in range(300)}


async def test_a_stream_that_breaks_midway_keeps_what_was_received(suite):
    stub = collector(suite)
    received = asyncio.Event()

    async def requests():
        for i in range(600):
            yield cpb.IngestTrajectoriesRequest(trajectory=traj(i))
        received.set()
        await asyncio.sleep(3600)

    call = stub.IngestTrajectories(requests(), timeout=30)
    await received.wait()
    await asyncio.sleep(0.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    ids = await _stored_ids(stub, expect=600)
    assert len(ids) == 600


async def _stored_ids(stub, *, expect: int) -> set[str]:
    ids: set[str] = set()
    for _ in range(50):
        records = await export(stub, cpb.ExportTrajectoriesRequest(format=cpb.EXPORT_FORMAT_COHORT_JSONL))
        ids = {r.trajectory_id for r in records}
        if len(ids) >= expect:
            break
        await asyncio.sleep(0.1)
    return ids


async def test_get_needs_an_id(suite):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collector(suite).GetTrajectory(cpb.GetTrajectoryRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(caught.value).field_violations[0].field == "trajectory_id"


async def _job_ids(stub, job_id: str, **filters) -> dict[str, bool]:
    response = await stub.SearchTrajectories(
        cpb.SearchTrajectoriesRequest(filter=cpb.TrajectoryFilter(job_id=job_id, **filters), page_size=100),
        timeout=10,
    )
    return {hit.trajectory.trajectory_id: hit.trajectory.superseded for hit in response.hits}


async def test_supersede_marks_an_abandoned_attempts_redone_iterations(suite):
    stub = collector(suite)
    items = []
    # attempt 1 collected iterations 0-3 and died; attempt 2 resumes from a checkpoint at iteration 2
    # and has already collected iteration 2 again
    for iteration in range(4):
        items.append(traj(iteration, trajectory_id=f"a1-i{iteration}", job_id="job-s", iteration=iteration))
        items[-1].labels[ATTEMPT_LABEL] = "1"
    redone = traj(9, trajectory_id="a2-i2", job_id="job-s", iteration=2)
    redone.labels[ATTEMPT_LABEL] = "2"
    other_job = traj(10, trajectory_id="other-i3", job_id="job-other", iteration=3)
    await ingest(stub, [*items, redone, other_job])

    request = cpb.SupersedeTrajectoriesRequest(
        request_id="resume-2", job_id="job-s", from_iteration=2, current_attempt=2
    )
    assert (await stub.SupersedeTrajectories(request, timeout=10)).superseded_count == 2
    # searches leave them out; asked for, they come back marked
    assert await _job_ids(stub, "job-s") == {"a1-i0": False, "a1-i1": False, "a2-i2": False}
    assert (await _job_ids(stub, "job-s", include_superseded=True))["a1-i3"] is True
    got = await stub.GetTrajectory(cpb.GetTrajectoryRequest(trajectory_id="a1-i2"), timeout=10)
    assert got.trajectory.superseded
    assert await _job_ids(stub, "job-other") == {"other-i3": False}
    # a retry answers as the first call did; another call finds nothing left to mark
    assert (await stub.SupersedeTrajectories(request, timeout=10)).superseded_count == 2
    again = cpb.SupersedeTrajectoriesRequest(job_id="job-s", from_iteration=2, current_attempt=2)
    assert (await stub.SupersedeTrajectories(again, timeout=10)).superseded_count == 0
    # attempt 3 resuming from iteration 0 marks what attempt 2 collected as well
    restart = cpb.SupersedeTrajectoriesRequest(job_id="job-s", from_iteration=0, current_attempt=3)
    assert (await stub.SupersedeTrajectories(restart, timeout=10)).superseded_count == 3


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"from_iteration": 1, "current_attempt": 2}, "job_id"),
        ({"job_id": "j", "from_iteration": -1, "current_attempt": 2}, "from_iteration"),
        ({"job_id": "j", "from_iteration": 1}, "current_attempt"),
    ],
)
async def test_supersede_names_a_bad_field(suite, request_fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collector(suite).SupersedeTrajectories(cpb.SupersedeTrajectoriesRequest(**request_fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(caught.value).field_violations[0].field == field
