"""Entry point of the collector service: what it serves. `cohort serve collector` runs it alone."""

from __future__ import annotations

from cohort.api.collector.v1 import collector_pb2_grpc
from cohort.platform.rpc.server import ServiceRegistration
from cohort.sdk.trajectories.usage import PriceTable
from cohort.services.collector.collection import Collector
from cohort.services.collector.servicer import CollectorServiceServicer
from cohort.services.collector.store import TrajectoryStore
from cohort.services.service_context import ServiceContext


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    prices = PriceTable.load(context.settings.price_table_file)
    store = TrajectoryStore(context.database, prices=prices)
    collector = Collector(context, store, prices=prices)
    return [
        ServiceRegistration(
            service_name="cohort.api.collector.v1.CollectorService",
            servicer=CollectorServiceServicer(store, collector),
            add_to_server=collector_pb2_grpc.add_CollectorServiceServicer_to_server,
        )
    ]
