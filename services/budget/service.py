"""The budget service's domain entry points: validation, pricing, idempotency, and the chosen backend.

`BudgetService` takes the proto requests (the idempotency records store proto answers) and answers
with proto responses; the servicer only forwards. Two backends:

- SQL only (`gate=None`, the embedded default, and PostgreSQL without Redis): every check-and-hold
  is one transaction of `BudgetLedger` (SQLite `BEGIN IMMEDIATE`; PostgreSQL row locks).
- Redis + PostgreSQL (`gate=RedisBudgetGate`): a Lua script checks and holds atomically in Redis, and
  every reservation, commit and release is then written to the PostgreSQL ledger, which stays the
  truth: Redis is rebuilt from it at start-up, periodically, and whenever Redis lost its data.

Every mutating call is idempotent by `request_id` (a repeat returns the first answer) and, for commit
and release, by the reservation itself (committing a committed reservation returns it unchanged).
A commit always books the actual cost, above its reservation too, and answers whether spending and
holds now exceed a limit (see `store`); `ReleaseJobReservations` frees what a job's crashed attempts
held, so a takeover does not wait for their ttl.
Bad input raises `InvalidArgument` naming the field before anything is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from cohort.api.budget.v1 import budget_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.context import Identity, current_tenant
from cohort.platform.errors import InvalidArgument, PermissionDenied
from cohort.platform.timestamps import to_timestamp
from cohort.sdk.trajectories.usage import PriceTable
from cohort.services.budget.store import (
    TOKEN_FIELDS,
    BudgetLedger,
    ModelTokens,
    Overrun,
    Reservation,
    ReservationState,
    Scope,
    Summary,
    month_of,
    new_reservation_id,
    parse_month,
)

logger = logging.getLogger(__name__)

SERVICE = "cohort.api.budget.v1.BudgetService"
MAX_TTL = timedelta(days=7)
MAX_AMOUNT_MICRO_USD = 10**15
"""$1 billion: anything larger is a mistake, and sums of such values would overflow 64-bit columns."""
MAX_TOKENS = 10**13
MAX_ID_LENGTH = 128
SETTLE_RETENTION = MAX_TTL + timedelta(days=1)
"""A commit or release of a reservation younger than this is (re)applied to Redis; Redis remembers
settled reservations for longer than this, so a repeat is never applied twice."""


class HoldGate(Protocol):
    """The atomic check-and-hold in front of the ledger (Redis in production)."""

    async def hold(self, reservation: Reservation, now: datetime) -> None:
        """Holds the reservation's amount or raises `ResourceExhausted` (reason `BUDGET_EXHAUSTED`)."""

    async def settle(self, reservation: Reservation, now: datetime) -> None:
        """Frees the hold and books `spent_micro_usd`; applying one reservation twice changes nothing."""

    async def limit_changed(self, tenant_id: str, scope: Scope, job_id: str, limit: int) -> None: ...

    async def maintain(self) -> None:
        """Periodic work: rebuild from the ledger when due."""

    async def close(self) -> None: ...


def reservation_proto(reservation: Reservation) -> budget_pb2.Reservation:
    return budget_pb2.Reservation(
        reservation_id=reservation.reservation_id,
        tenant_id=reservation.tenant_id,
        job_id=reservation.job_id,
        amount_micro_usd=reservation.amount_micro_usd,
        spent_micro_usd=reservation.spent_micro_usd,
        state=int(reservation.state),
        expire_time=to_timestamp(reservation.expire_time),
        create_time=to_timestamp(reservation.create_time),
    )


def summary_proto(summary: Summary) -> budget_pb2.UsageSummary:
    return budget_pb2.UsageSummary(
        scope=int(summary.scope),
        limit_micro_usd=summary.limit_micro_usd,
        spent_micro_usd=summary.spent_micro_usd,
        reserved_micro_usd=summary.reserved_micro_usd,
        remaining_micro_usd=summary.remaining_micro_usd,
        usage=[
            budget_pb2.ModelUsage(model=line.model, **{name: getattr(line, name) for name in TOKEN_FIELDS})
            for line in summary.usage
        ],
    )


def commit_response(reservation: Reservation, overrun: Overrun) -> budget_pb2.CommitResponse:
    return budget_pb2.CommitResponse(
        reservation=reservation_proto(reservation),
        limit_exceeded=overrun.scope is not None,
        limiting_scope=0 if overrun.scope is None else int(overrun.scope),
        over_limit_micro_usd=overrun.over_micro_usd,
        remaining_micro_usd=overrun.remaining_micro_usd,
    )


def _check_job_id(job_id: str, field: str = "job_id") -> str:
    if len(job_id) > MAX_ID_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_ID_LENGTH} characters")
    return job_id


def _check_reservation_id(reservation_id: str) -> str:
    if not reservation_id:
        raise InvalidArgument("reservation_id", "is required")
    if len(reservation_id) > 64:
        raise InvalidArgument("reservation_id", "must be at most 64 characters")
    return reservation_id


class BudgetService:
    def __init__(
        self,
        ledger: BudgetLedger,
        prices: PriceTable,
        *,
        default_ttl_seconds: float,
        gate: HoldGate | None = None,
        maintain_seconds: float = 60.0,
    ) -> None:
        self.ledger = ledger
        self.prices = prices
        self.default_ttl = timedelta(seconds=default_ttl_seconds)
        self.gate = gate
        self.maintain_seconds = maintain_seconds
        self._last_maintenance = time.monotonic()
        self._maintenance: asyncio.Task | None = None

    # -- validation and pricing ----------------------------------------------------------------

    def _tokens(self, usage: Sequence[budget_pb2.ModelUsage], field: str = "usage") -> list[ModelTokens]:
        lines = []
        for index, line in enumerate(usage):
            path = f"{field}[{index}]"
            if not line.model:
                raise InvalidArgument(f"{path}.model", "is required")
            if not self.prices.is_known(line.model):
                raise InvalidArgument(
                    f"{path}.model",
                    f"unknown model {line.model!r}: add it to the price table (price_table_file)",
                )
            for name in TOKEN_FIELDS:
                value = getattr(line, name)
                if not 0 <= value <= MAX_TOKENS:
                    raise InvalidArgument(f"{path}.{name}", f"must be between 0 and {MAX_TOKENS}")
            lines.append(ModelTokens(line.model, *(getattr(line, name) for name in TOKEN_FIELDS)))
        return lines

    def _price(self, lines: Sequence[ModelTokens], field: str = "usage") -> int:
        total = 0
        for line in lines:
            usage = trajectory_pb2.TokenUsage(**{name: getattr(line, name) for name in TOKEN_FIELDS})
            total += self.prices.price_micro_usd(line.model, usage)
        if total > MAX_AMOUNT_MICRO_USD:
            raise InvalidArgument(field, f"costs more than {MAX_AMOUNT_MICRO_USD} micro-USD")
        return total

    def _ttl(self, request: budget_pb2.ReserveRequest) -> timedelta:
        if not request.HasField("ttl"):
            return self.default_ttl
        ttl = request.ttl.ToTimedelta()
        if ttl <= timedelta(0) or request.ttl.nanos < 0:
            raise InvalidArgument("ttl", "must be positive")
        if ttl > MAX_TTL:
            raise InvalidArgument("ttl", f"must be at most {MAX_TTL.days} days")
        return ttl

    # -- RPCs -------------------------------------------------------------------------------------

    async def estimate(self, request: budget_pb2.EstimateRequest) -> budget_pb2.EstimateResponse:
        tenant_id = current_tenant()
        job_id = _check_job_id(request.job_id)
        if not 0 <= request.cost_micro_usd <= MAX_AMOUNT_MICRO_USD:
            raise InvalidArgument("cost_micro_usd", f"must be between 0 and {MAX_AMOUNT_MICRO_USD}")
        cost = self._price(self._tokens(request.usage)) + request.cost_micro_usd
        if cost > MAX_AMOUNT_MICRO_USD:
            raise InvalidArgument("cost_micro_usd", f"with the usage, costs more than {MAX_AMOUNT_MICRO_USD}")
        headroom = await self.ledger.headroom(tenant_id, job_id)
        fits = cost <= headroom.remaining_micro_usd
        return budget_pb2.EstimateResponse(
            cost_micro_usd=cost,
            remaining_micro_usd=headroom.remaining_micro_usd,
            fits=fits,
            limiting_scope=0 if fits or headroom.scope is None else int(headroom.scope),
        )

    async def reserve(self, request: budget_pb2.ReserveRequest) -> budget_pb2.ReserveResponse:
        tenant_id = current_tenant()
        self._maintain_when_due()
        job_id = _check_job_id(request.job_id)
        amount = request.amount_micro_usd
        if not 0 < amount <= MAX_AMOUNT_MICRO_USD:
            raise InvalidArgument("amount_micro_usd", f"must be between 1 and {MAX_AMOUNT_MICRO_USD}")
        ttl = self._ttl(request)
        scope = f"{SERVICE}.Reserve"
        if self.gate is None:
            return await self.ledger.reserve_once(
                scope,
                request,
                budget_pb2.ReserveResponse,
                lambda reservation: budget_pb2.ReserveResponse(reservation=reservation_proto(reservation)),
                tenant_id,
                job_id=job_id,
                amount_micro_usd=amount,
                ttl=ttl,
            )

        previous = await self.ledger.find_answer(scope, request, budget_pb2.ReserveResponse)
        if previous is not None:
            return previous
        now = self.ledger.now()
        pending = Reservation(
            reservation_id=new_reservation_id(),
            tenant_id=tenant_id,
            job_id=job_id,
            month=month_of(now),
            amount_micro_usd=amount,
            spent_micro_usd=0,
            state=ReservationState.ACTIVE,
            create_time=now,
            expire_time=now + ttl,
        )
        await self.gate.hold(pending, now)

        async def record(session) -> budget_pb2.ReserveResponse:
            reservation = await self.ledger.reserve(
                session,
                tenant_id,
                job_id=job_id,
                amount_micro_usd=amount,
                ttl=ttl,
                check_limits=False,
                reservation_id=pending.reservation_id,
                now=now,
            )
            return budget_pb2.ReserveResponse(reservation=reservation_proto(reservation))

        try:
            response = await self.ledger.run_once(scope, request, budget_pb2.ReserveResponse, record)
        except BaseException:
            # Not in the ledger, so not held: give the money back now rather than at the next rebuild.
            await self.gate.settle(pending, now)
            raise
        if response.reservation.reservation_id != pending.reservation_id:
            await self.gate.settle(pending, now)  # a concurrent repeat of this request id won
        return response

    async def commit(self, request: budget_pb2.CommitRequest) -> budget_pb2.CommitResponse:
        tenant_id = current_tenant()
        reservation_id = _check_reservation_id(request.reservation_id)
        lines = self._tokens(request.usage)
        if not 0 <= request.cost_micro_usd <= MAX_AMOUNT_MICRO_USD:
            raise InvalidArgument("cost_micro_usd", f"must be between 0 and {MAX_AMOUNT_MICRO_USD}")
        cost = self._price(lines) + request.cost_micro_usd

        async def commit_in_sql(session) -> budget_pb2.CommitResponse:
            reservation = await self.ledger.commit(
                session, tenant_id, reservation_id, cost_micro_usd=cost, usage=lines
            )
            return commit_response(reservation, await self.ledger.overrun(session, tenant_id, reservation))

        response = await self.ledger.run_once(
            f"{SERVICE}.Commit", request, budget_pb2.CommitResponse, commit_in_sql
        )
        await self._settle(tenant_id, reservation_id)
        return response

    async def release(self, request: budget_pb2.ReleaseRequest) -> budget_pb2.ReleaseResponse:
        tenant_id = current_tenant()
        reservation_id = _check_reservation_id(request.reservation_id)

        async def release_in_sql(session) -> budget_pb2.ReleaseResponse:
            reservation = await self.ledger.release(session, tenant_id, reservation_id)
            return budget_pb2.ReleaseResponse(reservation=reservation_proto(reservation))

        response = await self.ledger.run_once(
            f"{SERVICE}.Release", request, budget_pb2.ReleaseResponse, release_in_sql
        )
        await self._settle(tenant_id, reservation_id)
        return response

    async def release_job_reservations(
        self, request: budget_pb2.ReleaseJobReservationsRequest
    ) -> budget_pb2.ReleaseJobReservationsResponse:
        tenant_id = current_tenant()
        job_id = _check_job_id(request.job_id)
        if not job_id:
            raise InvalidArgument("job_id", "is required")

        async def release_in_sql(session) -> budget_pb2.ReleaseJobReservationsResponse:
            released = await self.ledger.release_job(session, tenant_id, job_id)
            return budget_pb2.ReleaseJobReservationsResponse(
                reservations=[reservation_proto(r) for r in released],
                released_micro_usd=sum(r.amount_micro_usd for r in released),
            )

        response = await self.ledger.run_once(
            f"{SERVICE}.ReleaseJobReservations",
            request,
            budget_pb2.ReleaseJobReservationsResponse,
            release_in_sql,
        )
        for reservation in response.reservations:
            await self._settle(tenant_id, reservation.reservation_id)
        return response

    async def _settle(self, tenant_id: str, reservation_id: str) -> None:
        """Applies a finished reservation to Redis (a repeat is harmless there: it is remembered)."""
        if self.gate is None:
            return
        now = self.ledger.now()
        reservation = await self.ledger.get_reservation(tenant_id, reservation_id)
        if (
            reservation.state is not ReservationState.ACTIVE
            and reservation.create_time >= now - SETTLE_RETENTION
        ):
            await self.gate.settle(reservation, now)

    async def get_usage(self, request: budget_pb2.GetUsageRequest) -> budget_pb2.GetUsageResponse:
        tenant_id = current_tenant()
        job_id = _check_job_id(request.job_id)
        month = parse_month(request.month) if request.month else None
        month, tenant, job = await self.ledger.usage(tenant_id, month=month, job_id=job_id)
        response = budget_pb2.GetUsageResponse(month=month, tenant=summary_proto(tenant))
        if job is not None:
            response.job.CopyFrom(summary_proto(job))
        return response

    async def set_limit(
        self, request: budget_pb2.SetLimitRequest, *, caller: Identity | None = None
    ) -> budget_pb2.SetLimitResponse:
        """Sets a limit. `caller` is an RPC's caller, whose right to set it is checked: only an admin
        key sets a tenant's monthly limit (else a tenant could lift its own cap), while a tenant
        may set its jobs' limits. None is a trusted in-process caller."""
        tenant_id = current_tenant()
        if request.scope not in (Scope.TENANT_MONTHLY, Scope.JOB):
            raise InvalidArgument("scope", "must be LIMIT_SCOPE_TENANT_MONTHLY or LIMIT_SCOPE_JOB")
        scope = Scope(request.scope)
        if scope is Scope.TENANT_MONTHLY and caller is not None and not caller.is_admin:
            raise PermissionDenied(
                "only an admin API key may set a tenant's monthly limit (LIMIT_SCOPE_TENANT_MONTHLY); "
                "a tenant's key may set its jobs' limits (LIMIT_SCOPE_JOB)",
                reason="ADMIN_REQUIRED",
                metadata={"scope": "LIMIT_SCOPE_TENANT_MONTHLY"},
            )
        job_id = _check_job_id(request.job_id)
        if scope is Scope.JOB and not job_id:
            raise InvalidArgument("job_id", "is required for LIMIT_SCOPE_JOB")
        if scope is Scope.TENANT_MONTHLY and job_id:
            raise InvalidArgument("job_id", "must be empty for LIMIT_SCOPE_TENANT_MONTHLY")
        limit = request.limit_micro_usd
        if not 0 <= limit <= MAX_AMOUNT_MICRO_USD:
            raise InvalidArgument(
                "limit_micro_usd", f"must be between 0 (no limit) and {MAX_AMOUNT_MICRO_USD}"
            )

        async def set_in_sql(session) -> budget_pb2.SetLimitResponse:
            summary = await self.ledger.set_limit(session, tenant_id, scope, job_id, limit)
            return budget_pb2.SetLimitResponse(usage=summary_proto(summary))

        response = await self.ledger.run_once(
            f"{SERVICE}.SetLimit", request, budget_pb2.SetLimitResponse, set_in_sql
        )
        if self.gate is not None:
            await self.gate.limit_changed(tenant_id, scope, job_id, limit)
        return response

    # -- maintenance ------------------------------------------------------------------------------

    async def maintain(self) -> int:
        """Writes down expired reservations and, with Redis, rebuilds it from the ledger when due."""
        expired = await self.ledger.sweep()
        if self.gate is not None:
            await self.gate.maintain()
        return expired

    def _maintain_when_due(self) -> None:
        """Runs `maintain` in the background every `maintain_seconds` (the services have no timer of
        their own); an expired hold stops counting at once anyway, this only writes it down."""
        if time.monotonic() - self._last_maintenance < self.maintain_seconds:
            return
        if self._maintenance is not None and not self._maintenance.done():
            return
        self._last_maintenance = time.monotonic()
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain_quietly())

    async def _maintain_quietly(self) -> None:
        try:
            await self.maintain()
        except Exception:  # noqa: BLE001 - maintenance is retried at the next interval
            logger.exception("budget maintenance failed")

    async def close(self) -> None:
        if self._maintenance is not None and not self._maintenance.done():
            self._maintenance.cancel()
        if self.gate is not None:
            await self.gate.close()
