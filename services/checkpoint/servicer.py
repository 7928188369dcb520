"""gRPC servicer of `cohort.api.checkpoint.v1.CheckpointService`: delegates each RPC to the domain.

Requests and responses are the domain's currency here on purpose: a repeated `request_id` must answer
with the exact first response, which `cohort.platform.storage.idempotency` stores as the protobuf message.
"""

from __future__ import annotations

import grpc.aio

from cohort.api.checkpoint.v1 import checkpoint_pb2, checkpoint_pb2_grpc
from cohort.services.checkpoint.service import CheckpointService


class CheckpointServiceServicer(checkpoint_pb2_grpc.CheckpointServiceServicer):
    def __init__(self, service: CheckpointService) -> None:
        self._service = service

    async def SaveCheckpoint(
        self,
        request: checkpoint_pb2.SaveCheckpointRequest,
        context: grpc.aio.ServicerContext[
            checkpoint_pb2.SaveCheckpointRequest, checkpoint_pb2.SaveCheckpointResponse
        ],
    ) -> checkpoint_pb2.SaveCheckpointResponse:
        return await self._service.save(request)

    async def GetCheckpoint(
        self,
        request: checkpoint_pb2.GetCheckpointRequest,
        context: grpc.aio.ServicerContext[
            checkpoint_pb2.GetCheckpointRequest, checkpoint_pb2.GetCheckpointResponse
        ],
    ) -> checkpoint_pb2.GetCheckpointResponse:
        return await self._service.get(request)

    async def ListCheckpoints(
        self,
        request: checkpoint_pb2.ListCheckpointsRequest,
        context: grpc.aio.ServicerContext[
            checkpoint_pb2.ListCheckpointsRequest, checkpoint_pb2.ListCheckpointsResponse
        ],
    ) -> checkpoint_pb2.ListCheckpointsResponse:
        return await self._service.list(request)

    async def GetLatestCheckpoint(
        self,
        request: checkpoint_pb2.GetLatestCheckpointRequest,
        context: grpc.aio.ServicerContext[
            checkpoint_pb2.GetLatestCheckpointRequest, checkpoint_pb2.GetLatestCheckpointResponse
        ],
    ) -> checkpoint_pb2.GetLatestCheckpointResponse:
        return await self._service.latest(request)

    async def DeleteCheckpoint(
        self,
        request: checkpoint_pb2.DeleteCheckpointRequest,
        context: grpc.aio.ServicerContext[
            checkpoint_pb2.DeleteCheckpointRequest, checkpoint_pb2.DeleteCheckpointResponse
        ],
    ) -> checkpoint_pb2.DeleteCheckpointResponse:
        return await self._service.delete(request)
