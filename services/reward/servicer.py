"""gRPC servicer of `cohort.api.reward.v1.RewardService`: proto <-> domain conversion only."""

from __future__ import annotations

from cohort.api.reward.v1 import reward_pb2, reward_pb2_grpc
from cohort.rpc.pending import pending_servicer

RewardServiceServicer = pending_servicer(
    reward_pb2_grpc.RewardServiceServicer,
    reward_pb2.DESCRIPTOR.services_by_name["RewardService"],
    "the learning issue (#5)",
)
