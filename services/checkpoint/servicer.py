"""gRPC servicer of `cohort.api.checkpoint.v1.CheckpointService`: delegates each RPC to the domain.

Requests and responses are the domain's currency here on purpose: a repeated `request_id` must answer
with the exact first response, which `cohort.idempotency` stores as the protobuf message.
"""

from __future__ import annotations

from cohort.api.checkpoint.v1 import checkpoint_pb2_grpc
from cohort.services.checkpoint.service import CheckpointService


class CheckpointServiceServicer(checkpoint_pb2_grpc.CheckpointServiceServicer):
    def __init__(self, service: CheckpointService) -> None:
        self._service = service

    async def SaveCheckpoint(self, request, context):
        return await self._service.save(request)

    async def GetCheckpoint(self, request, context):
        return await self._service.get(request)

    async def ListCheckpoints(self, request, context):
        return await self._service.list(request)

    async def GetLatestCheckpoint(self, request, context):
        return await self._service.latest(request)

    async def DeleteCheckpoint(self, request, context):
        return await self._service.delete(request)
