"""Entry point of the collector service: what it serves. `cohort serve collector` runs it alone."""

from __future__ import annotations

from cohort.api.collector.v1 import collector_pb2_grpc
from cohort.rpc.server import ServiceRegistration
from cohort.services.collector.servicer import CollectorServiceServicer
from cohort.services.context import ServiceContext


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    return [
        ServiceRegistration(
            service_name="cohort.api.collector.v1.CollectorService",
            servicer=CollectorServiceServicer(),
            add_to_server=collector_pb2_grpc.add_CollectorServiceServicer_to_server,
        )
    ]
