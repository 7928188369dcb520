"""Entry point of the reward service: what it serves. `cohort serve reward` runs it alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.reward.v1 import reward_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import NotFound, Unavailable
from cohort.platform.rpc.server import ServiceRegistration
from cohort.services.reward.functions import RewardFunctionRegistry
from cohort.services.reward.service import RewardScorer
from cohort.services.reward.servicer import RewardServiceServicer
from cohort.services.service_context import ServiceContext


def collector_fetch(context: ServiceContext):
    """Stored trajectories by id from the collector (`context.channels` read at call time: it is set
    once every server of the process is bound)."""

    async def fetch(trajectory_ids: Sequence[str]) -> list[trajectory_pb2.Trajectory]:
        stub = collector_pb2_grpc.CollectorServiceStub(context.channels.channel("collector"))

        async def one(trajectory_id: str) -> trajectory_pb2.Trajectory:
            try:
                response = await stub.GetTrajectory(
                    collector_pb2.GetTrajectoryRequest(trajectory_id=trajectory_id)
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise NotFound(
                        f"trajectory {trajectory_id!r} not found", metadata={"trajectory_id": trajectory_id}
                    ) from None
                message = f"the collector could not return {trajectory_id!r}: {exc.details()}"
                raise Unavailable(message) from None
            return response.trajectory

        return list(await asyncio.gather(*(one(trajectory_id) for trajectory_id in trajectory_ids)))

    return fetch


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    registry = RewardFunctionRegistry(context.database)
    scorer = RewardScorer(registry, fetch=collector_fetch(context))
    return [
        ServiceRegistration(
            service_name="cohort.api.reward.v1.RewardService",
            servicer=RewardServiceServicer(scorer, registry),
            add_to_server=reward_pb2_grpc.add_RewardServiceServicer_to_server,
        )
    ]
