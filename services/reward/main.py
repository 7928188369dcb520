"""Entry point of the reward service: what it serves. `cohort serve reward` runs it alone."""

from __future__ import annotations

from cohort.api.reward.v1 import reward_pb2_grpc
from cohort.rpc.server import ServiceRegistration
from cohort.services.context import ServiceContext
from cohort.services.reward.servicer import RewardServiceServicer


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    return [
        ServiceRegistration(
            service_name="cohort.api.reward.v1.RewardService",
            servicer=RewardServiceServicer(),
            add_to_server=reward_pb2_grpc.add_RewardServiceServicer_to_server,
        )
    ]
