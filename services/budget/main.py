"""Entry point of the budget service: what it serves. `cohort serve budget` runs it alone.

The backend follows the settings: with `redis_url` set and a PostgreSQL database, reservations are
checked and held in Redis (a Lua script) and written to the PostgreSQL ledger; otherwise every
check-and-hold is one SQL transaction (SQLite `BEGIN IMMEDIATE`, PostgreSQL row locks).
"""

from __future__ import annotations

from cohort.api.budget.v1 import budget_pb2_grpc
from cohort.platform.config import Settings
from cohort.platform.rpc.server import ServiceRegistration
from cohort.platform.storage.engine import Database
from cohort.sdk.trajectories.usage import PriceTable
from cohort.services.budget.service import BudgetService
from cohort.services.budget.servicer import BudgetServiceServicer
from cohort.services.budget.store import BudgetLedger
from cohort.services.service_context import ServiceContext


def uses_redis(settings: Settings, database: Database) -> bool:
    return bool(settings.redis_url) and not database.is_sqlite


def build_service(settings: Settings, database: Database, **ledger_options) -> BudgetService:
    """The budget domain for these settings (`ledger_options`: e.g. `now=` a test clock)."""
    ledger = BudgetLedger(
        database, default_monthly_limit_micro_usd=settings.default_monthly_limit_micro_usd, **ledger_options
    )
    gate = None
    if uses_redis(settings, database):
        from cohort.services.budget.redis_store import RedisBudgetGate

        # Ledgers in different schemas (deployments, tests) sharing one Redis must not share keys.
        prefix = "cohort:budget" + (f":{settings.database_schema}" if settings.database_schema else "")
        gate = RedisBudgetGate(settings.redis_url, ledger, key_prefix=prefix)
    return BudgetService(
        ledger,
        PriceTable.load(settings.price_table_file),
        default_ttl_seconds=settings.reservation_ttl_seconds,
        gate=gate,
    )


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    service = build_service(context.settings, context.database)
    return [
        ServiceRegistration(
            service_name="cohort.api.budget.v1.BudgetService",
            servicer=BudgetServiceServicer(service),
            add_to_server=budget_pb2_grpc.add_BudgetServiceServicer_to_server,
            on_stop=service.close,  # its maintenance task and Redis client
        )
    ]
