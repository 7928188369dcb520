"""gRPC servicer of `cohort.api.budget.v1.BudgetService`: forwards each call to `BudgetService`."""

from __future__ import annotations

from cohort.api.budget.v1 import budget_pb2_grpc
from cohort.context import require_identity
from cohort.services.budget.service import BudgetService


class BudgetServiceServicer(budget_pb2_grpc.BudgetServiceServicer):
    def __init__(self, service: BudgetService) -> None:
        self._service = service

    async def Estimate(self, request, context):
        return await self._service.estimate(request)

    async def Reserve(self, request, context):
        return await self._service.reserve(request)

    async def Commit(self, request, context):
        return await self._service.commit(request)

    async def Release(self, request, context):
        return await self._service.release(request)

    async def ReleaseJobReservations(self, request, context):
        return await self._service.release_job_reservations(request)

    async def GetUsage(self, request, context):
        return await self._service.get_usage(request)

    async def SetLimit(self, request, context):
        return await self._service.set_limit(request, caller=require_identity())
