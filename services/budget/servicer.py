"""gRPC servicer of `cohort.api.budget.v1.BudgetService`: forwards each call to `BudgetService`."""

from __future__ import annotations

import grpc.aio

from cohort.api.budget.v1 import budget_pb2, budget_pb2_grpc
from cohort.platform.context import require_identity
from cohort.services.budget.service import BudgetService


class BudgetServiceServicer(budget_pb2_grpc.BudgetServiceServicer):
    def __init__(self, service: BudgetService) -> None:
        self._service = service

    async def Estimate(
        self,
        request: budget_pb2.EstimateRequest,
        context: grpc.aio.ServicerContext[budget_pb2.EstimateRequest, budget_pb2.EstimateResponse],
    ) -> budget_pb2.EstimateResponse:
        return await self._service.estimate(request)

    async def Reserve(
        self,
        request: budget_pb2.ReserveRequest,
        context: grpc.aio.ServicerContext[budget_pb2.ReserveRequest, budget_pb2.ReserveResponse],
    ) -> budget_pb2.ReserveResponse:
        return await self._service.reserve(request)

    async def Commit(
        self,
        request: budget_pb2.CommitRequest,
        context: grpc.aio.ServicerContext[budget_pb2.CommitRequest, budget_pb2.CommitResponse],
    ) -> budget_pb2.CommitResponse:
        return await self._service.commit(request)

    async def Release(
        self,
        request: budget_pb2.ReleaseRequest,
        context: grpc.aio.ServicerContext[budget_pb2.ReleaseRequest, budget_pb2.ReleaseResponse],
    ) -> budget_pb2.ReleaseResponse:
        return await self._service.release(request)

    async def ReleaseJobReservations(
        self,
        request: budget_pb2.ReleaseJobReservationsRequest,
        context: grpc.aio.ServicerContext[
            budget_pb2.ReleaseJobReservationsRequest, budget_pb2.ReleaseJobReservationsResponse
        ],
    ) -> budget_pb2.ReleaseJobReservationsResponse:
        return await self._service.release_job_reservations(request)

    async def GetUsage(
        self,
        request: budget_pb2.GetUsageRequest,
        context: grpc.aio.ServicerContext[budget_pb2.GetUsageRequest, budget_pb2.GetUsageResponse],
    ) -> budget_pb2.GetUsageResponse:
        return await self._service.get_usage(request)

    async def SetLimit(
        self,
        request: budget_pb2.SetLimitRequest,
        context: grpc.aio.ServicerContext[budget_pb2.SetLimitRequest, budget_pb2.SetLimitResponse],
    ) -> budget_pb2.SetLimitResponse:
        return await self._service.set_limit(request, caller=require_identity())
