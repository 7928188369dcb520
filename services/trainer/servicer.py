"""gRPC servicer of `cohort.api.trainer.v1.TrainerService`: proto <-> domain conversion only."""

from __future__ import annotations

import grpc.aio

from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from cohort.policy import decision_request_from_proto
from cohort.services.trainer.service import TrainerService


class TrainerServiceServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, service: TrainerService) -> None:
        self._service = service

    async def CreatePolicy(
        self,
        request: trainer_pb2.CreatePolicyRequest,
        context: grpc.aio.ServicerContext[trainer_pb2.CreatePolicyRequest, trainer_pb2.CreatePolicyResponse],
    ) -> trainer_pb2.CreatePolicyResponse:
        return await self._service.create_policy(request)

    async def GetPolicy(
        self,
        request: trainer_pb2.GetPolicyRequest,
        context: grpc.aio.ServicerContext[trainer_pb2.GetPolicyRequest, trainer_pb2.GetPolicyResponse],
    ) -> trainer_pb2.GetPolicyResponse:
        policy = await self._service.get_policy(
            request.policy_id, request.version, request.include_parameters
        )
        return trainer_pb2.GetPolicyResponse(policy=policy)

    async def ListPolicies(
        self,
        request: trainer_pb2.ListPoliciesRequest,
        context: grpc.aio.ServicerContext[trainer_pb2.ListPoliciesRequest, trainer_pb2.ListPoliciesResponse],
    ) -> trainer_pb2.ListPoliciesResponse:
        policies, next_token = await self._service.list_policies(request.page_size, request.page_token)
        return trainer_pb2.ListPoliciesResponse(policies=policies, next_page_token=next_token)

    async def Decide(
        self,
        request: trainer_pb2.DecideRequest,
        context: grpc.aio.ServicerContext[trainer_pb2.DecideRequest, trainer_pb2.DecideResponse],
    ) -> trainer_pb2.DecideResponse:
        decision = await self._service.decide(
            request.policy_id, request.version, decision_request_from_proto(request)
        )
        return trainer_pb2.DecideResponse(decision=decision)

    async def UpdatePolicy(
        self,
        request: trainer_pb2.UpdatePolicyRequest,
        context: grpc.aio.ServicerContext[trainer_pb2.UpdatePolicyRequest, trainer_pb2.UpdatePolicyResponse],
    ) -> trainer_pb2.UpdatePolicyResponse:
        return await self._service.update_policy(request)
