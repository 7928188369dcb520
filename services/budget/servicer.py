"""gRPC servicer of `cohort.api.budget.v1.BudgetService`: proto <-> domain conversion only."""

from __future__ import annotations

from cohort.api.budget.v1 import budget_pb2, budget_pb2_grpc
from cohort.rpc.pending import pending_servicer

BudgetServiceServicer = pending_servicer(
    budget_pb2_grpc.BudgetServiceServicer,
    budget_pb2.DESCRIPTOR.services_by_name["BudgetService"],
    "the jobs issue (#6)",
)
