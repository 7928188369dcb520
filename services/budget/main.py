"""Entry point of the budget service: what it serves. `cohort serve budget` runs it alone."""

from __future__ import annotations

from cohort.api.budget.v1 import budget_pb2_grpc
from cohort.rpc.server import ServiceRegistration
from cohort.services.budget.servicer import BudgetServiceServicer
from cohort.services.context import ServiceContext


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    return [
        ServiceRegistration(
            service_name="cohort.api.budget.v1.BudgetService",
            servicer=BudgetServiceServicer(),
            add_to_server=budget_pb2_grpc.add_BudgetServiceServicer_to_server,
        )
    ]
