"""gRPC servicer of `cohort.api.collector.v1.CollectorService`: proto <-> domain conversion only."""

from __future__ import annotations

from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.rpc.pending import pending_servicer

CollectorServiceServicer = pending_servicer(
    collector_pb2_grpc.CollectorServiceServicer,
    collector_pb2.DESCRIPTOR.services_by_name["CollectorService"],
    "the trajectories and rollouts issues (#3, #4)",
)
