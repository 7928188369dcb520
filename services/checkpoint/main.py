"""Entry point of the checkpoint service: what it serves. `cohort serve checkpoint` runs it alone."""

from __future__ import annotations

from cohort.api.checkpoint.v1 import checkpoint_pb2_grpc
from cohort.rpc.server import ServiceRegistration
from cohort.services.checkpoint.servicer import CheckpointServiceServicer
from cohort.services.context import ServiceContext


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    return [
        ServiceRegistration(
            service_name="cohort.api.checkpoint.v1.CheckpointService",
            servicer=CheckpointServiceServicer(),
            add_to_server=checkpoint_pb2_grpc.add_CheckpointServiceServicer_to_server,
        )
    ]
