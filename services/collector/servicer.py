"""gRPC servicer of `cohort.api.collector.v1.CollectorService`: proto <-> domain conversion only.

The trajectory-store RPCs call `TrajectoryStore`; `CollectGroup` calls `Collector.collect_group`
(`collection.py`) with the caller's bearer token, which remote agents get to call `Decide`.
`IngestTrajectories` reads the client stream into batches (`INGEST_BATCH_ITEMS` items,
`INGEST_BATCH_BYTES` bytes or `INGEST_BATCH_SECONDS` after the batch's first item, whichever comes
first) and stores each batch as it fills, while the next one is being read, so memory stays bounded
however long the stream. A stream that breaks midway (cancelled, an oversize message) keeps what was
stored: the items already received are stored too, then the error reaches the client.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC as _UTC
from typing import Any, Final

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.context import require_identity
from cohort.platform.errors import NotImplementedYet
from cohort.platform.rpc.interceptors import AUTHORIZATION_KEY, metadata_value, status_of
from cohort.services.collector.collection import Collector
from cohort.services.collector.export import render_records, renderer_for
from cohort.services.collector.store import (
    IngestResult,
    ItemStatus,
    SearchQuery,
    TrajectoryFilter,
    TrajectoryStore,
    View,
)

INGEST_BATCH_ITEMS = 256
INGEST_BATCH_BYTES = 8 * 1024 * 1024
INGEST_BATCH_SECONDS = 0.05
INGEST_PIPELINE = 2
_QUEUE_ITEMS = 2 * INGEST_BATCH_ITEMS


class _Stream(enum.Enum):
    """The reader's end-of-stream mark in the ingest queue: an enum member, so `item is _END` narrows."""

    END = enum.auto()


_END: Final = _Stream.END


def filter_from_proto(message: collector_pb2.TrajectoryFilter) -> TrajectoryFilter:
    return TrajectoryFilter(
        agent_name=message.agent_name,
        agent_version=message.agent_version,
        job_id=message.job_id,
        group_id=message.group_id,
        iteration=message.iteration if message.HasField("iteration") else None,
        success=message.success if message.HasField("success") else None,
        termination_reasons=tuple(message.termination_reasons),
        min_reward=message.min_reward if message.HasField("min_reward") else None,
        max_reward=message.max_reward if message.HasField("max_reward") else None,
        created_after=message.start_time.ToDatetime(_UTC) if message.HasField("start_time") else None,
        created_before=message.end_time.ToDatetime(_UTC) if message.HasField("end_time") else None,
        labels=tuple(sorted(message.labels.items())),
        include_superseded=message.include_superseded,
    )


def _bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's API key, handed to remote agents for `Decide` ("" when the call carried none)."""
    scheme, _, token = (metadata_value(context, AUTHORIZATION_KEY) or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _view(value: int) -> View:
    return View.FULL if value == collector_pb2.TRAJECTORY_VIEW_FULL else View.BASIC


class CollectorServiceServicer(collector_pb2_grpc.CollectorServiceServicer):
    def __init__(self, store: TrajectoryStore, collector: Collector | None = None) -> None:
        self._store = store
        self._collector = collector

    async def CollectGroup(
        self,
        request: collector_pb2.CollectGroupRequest,
        context: grpc.aio.ServicerContext[
            collector_pb2.CollectGroupRequest, collector_pb2.CollectGroupResponse
        ],
    ) -> AsyncIterator[collector_pb2.CollectGroupResponse]:
        if self._collector is None:
            raise NotImplementedYet("CollectGroup is not served by this collector")
        responses = self._collector.collect_group(request, caller_api_key=_bearer_token(context))
        async for response in responses:
            yield response

    async def IngestTrajectories(
        self,
        request_iterator: AsyncIterator[collector_pb2.IngestTrajectoriesRequest],
        context: grpc.aio.ServicerContext[
            collector_pb2.IngestTrajectoriesRequest, collector_pb2.IngestTrajectoriesResponse
        ],
    ) -> collector_pb2.IngestTrajectoriesResponse:
        tenant_id = require_identity().tenant_id
        response = collector_pb2.IngestTrajectoriesResponse()
        queue: asyncio.Queue[trajectory_pb2.Trajectory | BaseException | _Stream] = asyncio.Queue(
            maxsize=_QUEUE_ITEMS
        )

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await queue.put(request.trajectory)
            except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises
                await queue.put(error)
                return
            await queue.put(_END)

        reader = asyncio.create_task(read())
        offset = 0
        failure: BaseException | None = None
        # Up to INGEST_PIPELINE batches in flight: one being prepared (worker thread) while the
        # previous one is written, so the CPU work and the database overlap. Results are applied in
        # stream order; a task still running when the call is cancelled finishes on its own.
        in_flight: deque[tuple[asyncio.Task[IngestResult], int]] = deque()

        async def settle_oldest() -> None:
            task, start = in_flight.popleft()
            self._apply(await task, start, response)

        try:
            while failure is None:
                batch: list[trajectory_pb2.Trajectory] = []
                size = 0
                item = await queue.get()
                deadline = time.monotonic() + INGEST_BATCH_SECONDS
                while True:
                    if item is _END:
                        break
                    if isinstance(item, BaseException):
                        failure = item
                        break
                    batch.append(item)
                    size += item.ByteSize()
                    if len(batch) >= INGEST_BATCH_ITEMS or size >= INGEST_BATCH_BYTES:
                        break
                    try:
                        item = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        try:
                            item = await asyncio.wait_for(queue.get(), remaining)
                        except TimeoutError:
                            break
                if batch:
                    if len(in_flight) >= INGEST_PIPELINE:
                        await settle_oldest()
                    in_flight.append((asyncio.create_task(self._store.ingest(tenant_id, batch)), offset))
                    offset += len(batch)
                if item is _END:
                    break
            while in_flight:
                await settle_oldest()
        finally:
            if not reader.done():
                reader.cancel()
        if failure is not None:
            raise failure
        return response

    @staticmethod
    def _apply(result: IngestResult, offset: int, response: collector_pb2.IngestTrajectoriesResponse) -> None:
        for item in result.items:
            if item.status is ItemStatus.FAILED:
                assert item.error is not None
                response.failures.add(
                    index=offset + item.index,
                    trajectory_id=item.trajectory_id,
                    status=status_of(item.error),
                )
                continue
            response.trajectory_ids.append(item.trajectory_id)
            if item.status is ItemStatus.STORED:
                response.stored_count += 1
            else:
                response.duplicate_count += 1

    async def SupersedeTrajectories(
        self,
        request: collector_pb2.SupersedeTrajectoriesRequest,
        context: grpc.aio.ServicerContext[
            collector_pb2.SupersedeTrajectoriesRequest, collector_pb2.SupersedeTrajectoriesResponse
        ],
    ) -> collector_pb2.SupersedeTrajectoriesResponse:
        return await self._store.supersede(request)

    async def RecordScores(
        self,
        request: collector_pb2.RecordScoresRequest,
        context: grpc.aio.ServicerContext[
            collector_pb2.RecordScoresRequest, collector_pb2.RecordScoresResponse
        ],
    ) -> collector_pb2.RecordScoresResponse:
        return await self._store.record_scores(require_identity().tenant_id, request)

    async def GetTrajectory(
        self,
        request: collector_pb2.GetTrajectoryRequest,
        context: grpc.aio.ServicerContext[
            collector_pb2.GetTrajectoryRequest, collector_pb2.GetTrajectoryResponse
        ],
    ) -> collector_pb2.GetTrajectoryResponse:
        trajectory = await self._store.get(require_identity().tenant_id, request.trajectory_id)
        return collector_pb2.GetTrajectoryResponse(trajectory=trajectory)

    async def SearchTrajectories(
        self,
        request: collector_pb2.SearchTrajectoriesRequest,
        context: grpc.aio.ServicerContext[
            collector_pb2.SearchTrajectoriesRequest, collector_pb2.SearchTrajectoriesResponse
        ],
    ) -> collector_pb2.SearchTrajectoriesResponse:
        query = SearchQuery(
            filter=filter_from_proto(request.filter),
            text_query=request.text_query,
            similar_to_text=request.similar_to_text,
            similar_to_trajectory_id=request.similar_to_trajectory_id,
            page_size=request.page_size,
            page_token=request.page_token,
            view=_view(request.view),
        )
        hits, next_token = await self._store.search(require_identity().tenant_id, query)
        return collector_pb2.SearchTrajectoriesResponse(
            hits=[collector_pb2.SearchHit(trajectory=hit.trajectory, score=hit.score) for hit in hits],
            next_page_token=next_token,
        )

    async def ExportTrajectories(
        self,
        request: collector_pb2.ExportTrajectoriesRequest,
        context: grpc.aio.ServicerContext[
            collector_pb2.ExportTrajectoriesRequest, collector_pb2.ExportTrajectoriesResponse
        ],
    ) -> AsyncIterator[collector_pb2.ExportTrajectoriesResponse]:
        renderer = renderer_for(request.format)
        tenant_id = require_identity().tenant_id
        batches = self._store.export_batches(tenant_id, filter_from_proto(request.filter), request.limit)
        async for batch in batches:
            records = await asyncio.to_thread(render_records, renderer, batch)
            for trajectory, record in zip(batch, records, strict=True):
                if record is None:
                    continue
                yield collector_pb2.ExportTrajectoriesResponse(
                    trajectory_id=trajectory.trajectory_id,
                    record=record,
                    create_time=Timestamp(
                        seconds=trajectory.create_time.seconds, nanos=trajectory.create_time.nanos
                    ),
                )
