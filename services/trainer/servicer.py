"""gRPC servicer of `cohort.api.trainer.v1.TrainerService`: proto <-> domain conversion only."""

from __future__ import annotations

from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from cohort.rpc.pending import pending_servicer

TrainerServiceServicer = pending_servicer(
    trainer_pb2_grpc.TrainerServiceServicer,
    trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
    "the rollouts and learning issues (#4, #5)",
)
