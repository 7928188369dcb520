"""gRPC servicer of `cohort.api.checkpoint.v1.CheckpointService`: proto <-> domain conversion only."""

from __future__ import annotations

from cohort.api.checkpoint.v1 import checkpoint_pb2, checkpoint_pb2_grpc
from cohort.rpc.pending import pending_servicer

CheckpointServiceServicer = pending_servicer(
    checkpoint_pb2_grpc.CheckpointServiceServicer,
    checkpoint_pb2.DESCRIPTOR.services_by_name["CheckpointService"],
    "the learning issue (#5)",
)
