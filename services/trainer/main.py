"""Entry point of the trainer service: what it serves. `cohort serve trainer` runs it alone."""

from __future__ import annotations

from cohort.api.trainer.v1 import trainer_pb2_grpc
from cohort.platform.rpc.server import ServiceRegistration
from cohort.services.service_context import ServiceContext
from cohort.services.trainer.service import TrainerService
from cohort.services.trainer.servicer import TrainerServiceServicer


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    return [
        ServiceRegistration(
            service_name="cohort.api.trainer.v1.TrainerService",
            servicer=TrainerServiceServicer(TrainerService(context.database)),
            add_to_server=trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
        )
    ]
