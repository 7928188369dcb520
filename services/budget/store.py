"""The budget ledger in SQL: limits, reservations and committed spending (SQLite and PostgreSQL).

Money is integer micro-USD. A tenant has a limit per calendar month (UTC); a job may have a lifetime
limit of its own; `0` means no limit. A reservation holds money until it is committed (its actual
cost is booked), released, or it expires. What holds count is summed from the active, unexpired
reservations, so an expired hold stops counting at its `expire_time` with nothing to repair; the
`sweep` (and any commit or release that finds one) only writes the EXPIRED state down.

A reservation and its spending count against the month it was made in (the month whose limit it
was checked against), even when the commit arrives after the month turned.

Atomicity: every mutation is one transaction. On SQLite it is `BEGIN IMMEDIATE` (one writer at a
time; in-process writers also queue on an asyncio lock so they never spin in SQLite's busy handler);
on PostgreSQL a reservation locks the tenant-month row (and the job's row) with `SELECT … FOR UPDATE`
before it checks and holds, so concurrent reservations of one tenant are serialized and can never
together exceed the limit. Commit and release only add to counters (`spent = spent + x`) and lock
in the same order (month, then job), so they cannot deadlock with a reservation.

Committing more than was reserved books the actual cost: the work has already been paid for, and
the ledger must equal what the work cost. Capping or refusing it would make the ledger lie while
saving nothing. What keeps the limit meaningful is that work is reserved before it starts, so
overspend is bounded by how far one commit exceeds its own reservation; the commit answers whether
spending and holds now exceed a limit (`Overrun`), so its owner stops at once, and every
reservation fails until the limit is raised or the month turns.
"""

from __future__ import annotations

import asyncio
import re
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import BigInteger, and_, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cohort.platform.errors import (
    CohortError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from cohort.platform.storage import idempotency
from cohort.platform.storage.engine import Database, write_transaction
from cohort.platform.storage.schema import (
    BudgetJobRow,
    BudgetModelUsageRow,
    BudgetMonthRow,
    BudgetReservationRow,
    BudgetTenantLimitRow,
    utcnow,
)

ResponseT = TypeVar("ResponseT", bound=Message)

UNLIMITED = 2**63 - 1
"""`remaining` when no limit applies."""

BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
"""`ErrorInfo.reason` of a reservation that does not fit: the job manager pauses the job on it."""

_MONTH = re.compile(r"(\d{4})-(\d{2})")

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
)


class ReservationState(IntEnum):
    """The values of `cohort.api.budget.v1.ReservationState`."""

    ACTIVE = 1
    COMMITTED = 2
    RELEASED = 3
    EXPIRED = 4


class Scope(IntEnum):
    """The values of `cohort.api.budget.v1.LimitScope`."""

    TENANT_MONTHLY = 1
    JOB = 2


def month_of(moment: datetime) -> str:
    """`YYYY-MM` of `moment` in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m")


def parse_month(text: str, field_name: str = "month") -> str:
    """`text` when it is a `YYYY-MM` month, else `InvalidArgument` naming `field_name`."""
    match = _MONTH.fullmatch(text)
    if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
        raise InvalidArgument(field_name, f"{text!r} is not a month: use YYYY-MM, for example 2025-01")
    return text


@dataclass(frozen=True)
class ModelTokens:
    """Token counts of one model."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    tenant_id: str
    job_id: str
    month: str
    amount_micro_usd: int
    spent_micro_usd: int
    state: ReservationState
    create_time: datetime
    expire_time: datetime


@dataclass(frozen=True)
class Summary:
    """Spending against one limit (`limit == 0`: none)."""

    scope: Scope
    limit_micro_usd: int
    spent_micro_usd: int
    reserved_micro_usd: int
    usage: tuple[ModelTokens, ...] = ()

    @property
    def remaining_micro_usd(self) -> int:
        if self.limit_micro_usd == 0:
            return UNLIMITED
        return max(0, self.limit_micro_usd - self.spent_micro_usd - self.reserved_micro_usd)


@dataclass(frozen=True)
class Overrun:
    """Where spending and holds stand against the limits after a commit."""

    scope: Scope | None
    """The limit exceeded (the tenant's month first when both are); None when none is."""
    over_micro_usd: int
    """By how much spending and holds exceed that limit."""
    remaining_micro_usd: int
    """What is left under the tightest limit (`UNLIMITED` when none applies)."""


@dataclass(frozen=True)
class Headroom:
    """What is left under the tightest applicable limit, and which limit that is (None: no limit)."""

    remaining_micro_usd: int
    scope: Scope | None


@dataclass(frozen=True)
class Room:
    """What a reservation is checked against: the tenant's month and, when it has one, its job."""

    month: str
    job_id: str
    limit: int
    spent: int
    held: int
    job_limit: int = 0
    job_spent: int = 0
    job_held: int = 0

    def refusal(self, amount: int) -> ResourceExhausted | None:
        """The error refusing `amount`, or None when it fits both limits (0: no limit)."""
        if self.limit and self.spent + self.held + amount > self.limit:
            remaining = max(0, self.limit - self.spent - self.held)
            return exhausted(
                Scope.TENANT_MONTHLY, self.limit, remaining, amount, month=self.month, job_id=self.job_id
            )
        if self.job_limit and self.job_spent + self.job_held + amount > self.job_limit:
            remaining = max(0, self.job_limit - self.job_spent - self.job_held)
            return exhausted(
                Scope.JOB, self.job_limit, remaining, amount, month=self.month, job_id=self.job_id
            )
        return None

    def overrun(self) -> Overrun:
        scope, over, remaining = None, 0, UNLIMITED
        for limit_scope, limit, used in (
            (Scope.TENANT_MONTHLY, self.limit, self.spent + self.held),
            (Scope.JOB, self.job_limit, self.job_spent + self.job_held),
        ):
            if not limit:
                continue
            remaining = min(remaining, max(0, limit - used))
            if used > limit and scope is None:
                scope, over = limit_scope, used - limit
        return Overrun(scope, over, remaining)


@dataclass
class LedgerSnapshot:
    """A tenant's ledger as Redis needs it to rebuild its counters (see `redis_store`)."""

    tenant_id: str
    monthly_limit_micro_usd: int
    job_limits: dict[str, int] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)
    """`m:YYYY-MM` and `j:<job id>` -> committed micro-USD."""
    holds: list[Reservation] = field(default_factory=list)
    """Active, unexpired reservations."""
    finished_ids: list[str] = field(default_factory=list)
    """Reservations committed or released at or after the snapshot's `finished_since`."""


def _to_reservation(row: BudgetReservationRow, now: datetime) -> Reservation:
    state = ReservationState(row.state)
    if state is ReservationState.ACTIVE and row.expire_time <= now:
        state = ReservationState.EXPIRED
    return Reservation(
        reservation_id=row.reservation_id,
        tenant_id=row.tenant_id,
        job_id=row.job_id,
        month=row.month,
        amount_micro_usd=row.amount_micro_usd,
        spent_micro_usd=row.spent_micro_usd,
        state=state,
        create_time=row.create_time,
        expire_time=row.expire_time,
    )


@dataclass(eq=False)
class _Waiting:
    """A reservation waiting for its turn (see `BudgetLedger.reserve_once`)."""

    scope: str
    request: Message
    response_type: type[Message]
    respond: Callable[[Reservation], Message]
    job_id: str
    amount: int
    ttl: timedelta
    answer: asyncio.Future


def _reservation_of(values: dict) -> Reservation:
    return Reservation(
        reservation_id=values["reservation_id"],
        tenant_id=values["tenant_id"],
        job_id=values["job_id"],
        month=values["month"],
        amount_micro_usd=values["amount_micro_usd"],
        spent_micro_usd=values["spent_micro_usd"],
        state=ReservationState(values["state"]),
        create_time=values["create_time"],
        expire_time=values["expire_time"],
    )


def new_reservation_id() -> str:
    return "rsv_" + uuid.uuid4().hex


def exhausted(
    scope: Scope, limit: int, remaining: int, amount: int, *, month: str, job_id: str
) -> ResourceExhausted:
    where = f"the tenant's limit for {month}" if scope is Scope.TENANT_MONTHLY else f"job {job_id!r}'s limit"
    return ResourceExhausted(
        f"the reservation of {amount} micro-USD does not fit {where}: {remaining} of {limit} micro-USD left",
        reason=BUDGET_EXHAUSTED,
        metadata={
            "scope": "LIMIT_SCOPE_TENANT_MONTHLY" if scope is Scope.TENANT_MONTHLY else "LIMIT_SCOPE_JOB",
            "limit_micro_usd": str(limit),
            "remaining_micro_usd": str(remaining),
            "requested_micro_usd": str(amount),
            "month": month,
            "job_id": job_id,
        },
    )


class BudgetLedger:
    """The SQL ledger. `now` is the clock (UTC, aware); tests inject one to cross months and expire holds."""

    def __init__(
        self,
        database: Database,
        *,
        default_monthly_limit_micro_usd: int,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.database = database
        self.default_monthly_limit_micro_usd = default_monthly_limit_micro_usd
        self.now = now
        # SQLite has one writer at a time anyway: queueing this process's writers here is cheaper
        # and fairer than letting them poll in SQLite's busy handler.
        self._sqlite_writer = asyncio.Lock() if database.is_sqlite else None
        self._tenant_queues: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._waiting: dict[str, list[_Waiting]] = {}
        dialect = sqlite if database.is_sqlite else postgresql
        self._insert = dialect.insert

    # -- transactions ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _writer(self) -> AsyncIterator[None]:
        if self._sqlite_writer is None:
            yield
            return
        async with self._sqlite_writer:
            yield

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction (SQLite: BEGIN IMMEDIATE)."""
        async with self._writer(), write_transaction(self.database.sessions) as session:
            yield session

    async def run_once(
        self,
        scope: str,
        request: Message,
        response_type: type[ResponseT],
        work: Callable[[AsyncSession], Awaitable[ResponseT]],
    ) -> ResponseT:
        """`work` in one write transaction, answered once per `request.request_id` (`idempotency`)."""
        async with self._writer():
            return await idempotency.run_once(self.database, scope, request, response_type, work)

    async def find_answer(
        self, scope: str, request: Message, response_type: type[ResponseT]
    ) -> ResponseT | None:
        return await idempotency.find_answer(self.database, scope, request, response_type)

    # -- rows and sums -----------------------------------------------------------------------------

    async def _ensure_month(self, session: AsyncSession, tenant_id: str, month: str) -> None:
        await session.execute(
            self._insert(BudgetMonthRow)
            .values(tenant_id=tenant_id, month=month, spent_micro_usd=0)
            .on_conflict_do_nothing(index_elements=["tenant_id", "month"])
        )

    async def _ensure_job(self, session: AsyncSession, tenant_id: str, job_id: str) -> None:
        await session.execute(
            self._insert(BudgetJobRow)
            .values(
                tenant_id=tenant_id,
                job_id=job_id,
                limit_micro_usd=0,
                spent_micro_usd=0,
                update_time=self.now(),
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "job_id"])
        )

    async def _lock_month(self, session: AsyncSession, tenant_id: str, month: str) -> None:
        """Creates the tenant-month row when missing and locks it, in one statement.

        On PostgreSQL an upsert that finds the row takes its row lock, like `SELECT … FOR UPDATE`;
        every reservation of the tenant in the month queues on it. (SQLite: `BEGIN IMMEDIATE` has
        already made this transaction the only writer.)
        """
        statement = self._insert(BudgetMonthRow).values(tenant_id=tenant_id, month=month, spent_micro_usd=0)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["tenant_id", "month"],
                set_={"spent_micro_usd": BudgetMonthRow.__table__.c.spent_micro_usd},
            )
        )

    async def _lock_job(self, session: AsyncSession, tenant_id: str, job_id: str) -> None:
        """Creates the job's row when missing and locks it (after the month: one lock order everywhere)."""
        statement = self._insert(BudgetJobRow).values(
            tenant_id=tenant_id, job_id=job_id, limit_micro_usd=0, spent_micro_usd=0, update_time=self.now()
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["tenant_id", "job_id"],
                set_={"spent_micro_usd": BudgetJobRow.__table__.c.spent_micro_usd},
            )
        )

    async def monthly_limit(self, session: AsyncSession, tenant_id: str) -> int:
        limit = await session.scalar(
            select(BudgetTenantLimitRow.monthly_limit_micro_usd).where(
                BudgetTenantLimitRow.tenant_id == tenant_id
            )
        )
        return self.default_monthly_limit_micro_usd if limit is None else limit

    @staticmethod
    def _held_query(tenant_id: str, now: datetime, *conditions):
        return select(func.coalesce(func.sum(BudgetReservationRow.amount_micro_usd), 0)).where(
            BudgetReservationRow.tenant_id == tenant_id,
            BudgetReservationRow.state == ReservationState.ACTIVE,
            BudgetReservationRow.expire_time > now,
            *conditions,
        )

    async def _held(self, session: AsyncSession, tenant_id: str, now: datetime, *conditions) -> int:
        return int(await session.scalar(self._held_query(tenant_id, now, *conditions)) or 0)

    async def _room(
        self, session: AsyncSession, tenant_id: str, month: str, job_id: str, now: datetime
    ) -> Room:
        """Limits, spending and holds of the tenant's month and the job, in one statement (one snapshot)."""
        zero = literal(0, BigInteger())
        limit = func.coalesce(
            select(BudgetTenantLimitRow.monthly_limit_micro_usd)
            .where(BudgetTenantLimitRow.tenant_id == tenant_id)
            .scalar_subquery(),
            literal(self.default_monthly_limit_micro_usd, BigInteger()),
        )
        spent = func.coalesce(
            select(BudgetMonthRow.spent_micro_usd)
            .where(BudgetMonthRow.tenant_id == tenant_id, BudgetMonthRow.month == month)
            .scalar_subquery(),
            zero,
        )
        held = self._held_query(tenant_id, now, BudgetReservationRow.month == month).scalar_subquery()
        columns = [limit, spent, held]
        if job_id:
            job = (BudgetJobRow.tenant_id == tenant_id, BudgetJobRow.job_id == job_id)
            columns += [
                func.coalesce(select(BudgetJobRow.limit_micro_usd).where(*job).scalar_subquery(), zero),
                func.coalesce(select(BudgetJobRow.spent_micro_usd).where(*job).scalar_subquery(), zero),
                self._held_query(tenant_id, now, BudgetReservationRow.job_id == job_id).scalar_subquery(),
            ]
        values = [int(value or 0) for value in (await session.execute(select(*columns))).one()]
        return Room(month, job_id, *values)

    def _queue(self, tenant_id: str) -> asyncio.Lock:
        """Where this process's reservations of a tenant wait their turn (SQLite: the one writer lock)."""
        if self._sqlite_writer is not None:
            return self._sqlite_writer
        lock = self._tenant_queues.get(tenant_id)
        if lock is None:
            lock = self._tenant_queues[tenant_id] = asyncio.Lock()
        return lock

    async def reserve_once(
        self,
        scope: str,
        request: Message,
        response_type: type[ResponseT],
        respond: Callable[[Reservation], ResponseT],
        tenant_id: str,
        *,
        job_id: str,
        amount_micro_usd: int,
        ttl: timedelta,
    ) -> ResponseT:
        """Reserves under the limits, answered once per request id; `respond` makes the answer.

        Group commit: this process's reservations of a tenant queue on one asyncio lock, and whoever
        takes it decides everything that queued meanwhile in one transaction (one lock of the
        tenant-month row, one read of what is spent and held, one insert), in arrival order. Under
        a burst that is a handful of transactions instead of one per call; each call still gets
        its own answer or error, exactly as if they had run one after another.
        """
        loop = asyncio.get_running_loop()
        item = _Waiting(
            scope, request, response_type, respond, job_id, amount_micro_usd, ttl, loop.create_future()
        )
        waiting = self._waiting.setdefault(tenant_id, [])
        waiting.append(item)
        try:
            async with self._queue(tenant_id):
                if not item.answer.done():
                    batch = self._waiting.pop(tenant_id, [])
                    # Shielded: the other callers' answers must not die with this caller's cancellation.
                    await asyncio.shield(self._decide(tenant_id, batch))
        except asyncio.CancelledError:
            if item in self._waiting.get(tenant_id, ()):
                self._waiting[tenant_id].remove(item)
            raise
        return item.answer.result()

    async def _decide(self, tenant_id: str, batch: list[_Waiting]) -> None:
        try:
            try:
                outcomes = await self._decide_together(tenant_id, batch)
            except IntegrityError:
                # A request id taken meanwhile by another process: decide one by one, so each finds
                # its first answer (`idempotency.run_once` handles exactly that).
                outcomes = [await self._decide_alone(tenant_id, item) for item in batch]
        except BaseException as error:  # noqa: BLE001 - every caller gets the failure
            for item in batch:
                if not item.answer.done():
                    item.answer.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.answer.done():
                continue
            if isinstance(outcome, BaseException):
                item.answer.set_exception(outcome)
            else:
                item.answer.set_result(outcome)

    async def _decide_alone(self, tenant_id: str, item: _Waiting) -> Message | BaseException:
        async def work(session: AsyncSession) -> Message:
            reservation = await self.reserve(
                session, tenant_id, job_id=item.job_id, amount_micro_usd=item.amount, ttl=item.ttl
            )
            return item.respond(reservation)

        try:
            return await idempotency.run_once(
                self.database, item.scope, item.request, item.response_type, work
            )
        except CohortError as error:
            return error

    async def _decide_together(self, tenant_id: str, batch: list[_Waiting]) -> list[Message | BaseException]:
        outcomes: list[Message | BaseException] = []
        async with write_transaction(self.database.sessions) as session:
            now = self.now()
            month = month_of(now)
            await self._lock_month(session, tenant_id, month)
            job_ids = sorted({item.job_id for item in batch if item.job_id})
            for job_id in job_ids:
                await self._lock_job(session, tenant_id, job_id)
            rooms = {job_id: await self._room(session, tenant_id, month, job_id, now) for job_id in job_ids}
            tenant_room = (
                next(iter(rooms.values())) if rooms else await self._room(session, tenant_id, month, "", now)
            )
            held = tenant_room.held
            job_held = {job_id: room.job_held for job_id, room in rooms.items()}
            answered: dict[str, tuple[str, Message]] = {}
            rows: list[dict] = []
            for item in batch:
                try:
                    request_id = getattr(item.request, "request_id", "")
                    fingerprint = idempotency.request_fingerprint(item.request)
                    previous = answered.get(request_id) if request_id else None
                    if previous is not None:
                        if previous[0] != fingerprint:
                            raise InvalidArgument(
                                "request_id", f"{request_id!r} was already used for a different request"
                            )
                        outcomes.append(previous[1])
                        continue
                    stored = await idempotency.find(session, item.scope, item.request, item.response_type)
                    if stored is not None:
                        outcomes.append(stored)
                        continue
                    if item.job_id:
                        room = replace(rooms[item.job_id], held=held, job_held=job_held[item.job_id])
                    else:
                        room = Room(month, "", tenant_room.limit, tenant_room.spent, held)
                    refusal = room.refusal(item.amount)
                    if refusal is not None:
                        raise refusal
                    row = {
                        "reservation_id": new_reservation_id(),
                        "tenant_id": tenant_id,
                        "job_id": item.job_id,
                        "month": month,
                        "amount_micro_usd": item.amount,
                        "spent_micro_usd": 0,
                        "state": int(ReservationState.ACTIVE),
                        "create_time": now,
                        "expire_time": now + item.ttl,
                        "finish_time": None,
                    }
                    response = item.respond(_reservation_of(row))
                    held += item.amount
                    if item.job_id:
                        job_held[item.job_id] += item.amount
                    rows.append(row)
                    idempotency.remember(session, item.scope, item.request, response)
                    if request_id:
                        answered[request_id] = (fingerprint, response)
                    outcomes.append(response)
                except CohortError as error:
                    outcomes.append(error)
            if rows:
                await session.execute(insert(BudgetReservationRow), rows)
        return outcomes

    async def _month_summary(
        self, session: AsyncSession, tenant_id: str, month: str, now: datetime
    ) -> Summary:
        spent = await session.scalar(
            select(BudgetMonthRow.spent_micro_usd).where(
                BudgetMonthRow.tenant_id == tenant_id, BudgetMonthRow.month == month
            )
        )
        return Summary(
            scope=Scope.TENANT_MONTHLY,
            limit_micro_usd=await self.monthly_limit(session, tenant_id),
            spent_micro_usd=spent or 0,
            reserved_micro_usd=await self._held(session, tenant_id, now, BudgetReservationRow.month == month),
            usage=await self._tokens(
                session, BudgetModelUsageRow.tenant_id == tenant_id, BudgetModelUsageRow.month == month
            ),
        )

    async def _job_summary(
        self, session: AsyncSession, tenant_id: str, job_id: str, now: datetime
    ) -> Summary:
        row = (
            await session.execute(
                select(BudgetJobRow.limit_micro_usd, BudgetJobRow.spent_micro_usd).where(
                    BudgetJobRow.tenant_id == tenant_id, BudgetJobRow.job_id == job_id
                )
            )
        ).one_or_none()
        return Summary(
            scope=Scope.JOB,
            limit_micro_usd=row.limit_micro_usd if row else 0,
            spent_micro_usd=row.spent_micro_usd if row else 0,
            reserved_micro_usd=await self._held(
                session, tenant_id, now, BudgetReservationRow.job_id == job_id
            ),
            usage=await self._tokens(
                session, BudgetModelUsageRow.tenant_id == tenant_id, BudgetModelUsageRow.job_id == job_id
            ),
        )

    async def _tokens(self, session: AsyncSession, *conditions) -> tuple[ModelTokens, ...]:
        columns = [func.coalesce(func.sum(getattr(BudgetModelUsageRow, name)), 0) for name in TOKEN_FIELDS]
        rows = await session.execute(
            select(BudgetModelUsageRow.model, *columns)
            .where(*conditions)
            .group_by(BudgetModelUsageRow.model)
            .order_by(BudgetModelUsageRow.model)
        )
        return tuple(ModelTokens(row[0], *(int(value) for value in row[1:])) for row in rows)

    async def _reservation_row(
        self, session: AsyncSession, tenant_id: str, reservation_id: str, *, lock: bool
    ) -> BudgetReservationRow:
        query = select(BudgetReservationRow).where(
            BudgetReservationRow.reservation_id == reservation_id, BudgetReservationRow.tenant_id == tenant_id
        )
        row = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
        if row is None:
            raise NotFound(
                f"reservation {reservation_id!r} not found", metadata={"reservation_id": reservation_id}
            )
        return row

    # -- operations (each inside a write transaction the caller opened) ----------------------------

    async def reserve(
        self,
        session: AsyncSession,
        tenant_id: str,
        *,
        job_id: str,
        amount_micro_usd: int,
        ttl: timedelta,
        check_limits: bool = True,
        reservation_id: str | None = None,
        now: datetime | None = None,
    ) -> Reservation:
        """Holds `amount_micro_usd` if it fits the tenant's month and the job; `ResourceExhausted` if not.

        `check_limits=False` only records the hold: the Redis gate has already checked and held it.
        """
        now = now or self.now()
        month = month_of(now)
        if check_limits:
            await self._lock_month(session, tenant_id, month)
            if job_id:
                await self._lock_job(session, tenant_id, job_id)
            refusal = (await self._room(session, tenant_id, month, job_id, now)).refusal(amount_micro_usd)
            if refusal is not None:
                raise refusal
        else:
            await self._ensure_month(session, tenant_id, month)
            if job_id:
                await self._ensure_job(session, tenant_id, job_id)
        row = BudgetReservationRow(
            reservation_id=reservation_id or new_reservation_id(),
            tenant_id=tenant_id,
            job_id=job_id,
            month=month,
            amount_micro_usd=amount_micro_usd,
            spent_micro_usd=0,
            state=ReservationState.ACTIVE,
            create_time=now,
            expire_time=now + ttl,
            finish_time=None,
        )
        await session.execute(
            insert(BudgetReservationRow).values(
                {column.key: getattr(row, column.key) for column in BudgetReservationRow.__table__.columns}
            )
        )
        return _to_reservation(row, now)

    async def commit(
        self,
        session: AsyncSession,
        tenant_id: str,
        reservation_id: str,
        *,
        cost_micro_usd: int,
        usage: Sequence[ModelTokens] = (),
    ) -> Reservation:
        """Books the actual cost (even above the amount held) and frees the hold.

        A committed reservation is returned as it is (a repeat); a released or expired one is
        `FailedPrecondition`.
        """
        now = self.now()
        # The reservation's row lock first, then the month's and the job's through the updates below:
        # a reservation takes month then job and never waits on a reservation row, so no cycle.
        row = await self._reservation_row(session, tenant_id, reservation_id, lock=True)
        state = _to_reservation(row, now).state
        if state is ReservationState.COMMITTED:  # a repeat: the first commit stands
            return _to_reservation(row, now)
        self._require_active(row, state, "commit")
        row.state = ReservationState.COMMITTED
        row.spent_micro_usd = cost_micro_usd
        row.finish_time = now
        if cost_micro_usd:
            await session.execute(
                update(BudgetMonthRow)
                .where(BudgetMonthRow.tenant_id == tenant_id, BudgetMonthRow.month == row.month)
                .values(spent_micro_usd=BudgetMonthRow.spent_micro_usd + cost_micro_usd)
            )
            if row.job_id:
                await session.execute(
                    update(BudgetJobRow)
                    .where(BudgetJobRow.tenant_id == tenant_id, BudgetJobRow.job_id == row.job_id)
                    .values(spent_micro_usd=BudgetJobRow.spent_micro_usd + cost_micro_usd)
                )
        await self._add_tokens(session, tenant_id, row.month, row.job_id, usage)
        await session.flush()
        return _to_reservation(row, now)

    async def overrun(self, session: AsyncSession, tenant_id: str, reservation: Reservation) -> Overrun:
        """Spending and holds against the limits `reservation` counts against (its month, its job)."""
        room = await self._room(session, tenant_id, reservation.month, reservation.job_id, self.now())
        return room.overrun()

    async def release_job(self, session: AsyncSession, tenant_id: str, job_id: str) -> list[Reservation]:
        """Releases every active, unexpired reservation of the job; returns them (released)."""
        now = self.now()
        rows = (
            (
                await session.execute(
                    select(BudgetReservationRow)
                    .where(
                        BudgetReservationRow.tenant_id == tenant_id,
                        BudgetReservationRow.job_id == job_id,
                        BudgetReservationRow.state == ReservationState.ACTIVE,
                        BudgetReservationRow.expire_time > now,
                    )
                    # One order, so two concurrent calls lock the rows without deadlocking.
                    .order_by(BudgetReservationRow.reservation_id)
                    .with_for_update()
                )
            )
            .scalars()
            .all()
        )
        for row in rows:
            row.state = ReservationState.RELEASED
            row.finish_time = now
        await session.flush()
        return [_to_reservation(row, now) for row in rows]

    async def release(self, session: AsyncSession, tenant_id: str, reservation_id: str) -> Reservation:
        """Frees the hold unspent; a released or expired reservation is returned as it is."""
        now = self.now()
        row = await self._reservation_row(session, tenant_id, reservation_id, lock=True)
        state = _to_reservation(row, now).state
        if state in (ReservationState.RELEASED, ReservationState.EXPIRED):
            return _to_reservation(row, now)
        self._require_active(row, state, "release")
        row.state = ReservationState.RELEASED
        row.finish_time = now
        await session.flush()
        return _to_reservation(row, now)

    @staticmethod
    def _require_active(row: BudgetReservationRow, state: ReservationState, verb: str) -> None:
        if state is not ReservationState.ACTIVE:
            done = "committed" if verb == "commit" else "released"
            raise FailedPrecondition(
                f"reservation {row.reservation_id!r} is {state.name.lower()}; "
                f"only an active one can be {done}",
                reason="RESERVATION_NOT_ACTIVE",
                metadata={"reservation_id": row.reservation_id, "state": f"RESERVATION_STATE_{state.name}"},
            )

    async def _add_tokens(
        self, session: AsyncSession, tenant_id: str, month: str, job_id: str, usage: Sequence[ModelTokens]
    ) -> None:
        merged: dict[str, list[int]] = {}
        for line in usage:
            counts = merged.setdefault(line.model, [0] * len(TOKEN_FIELDS))
            for index, name in enumerate(TOKEN_FIELDS):
                counts[index] += getattr(line, name)
        for model, counts in merged.items():
            values = dict(zip(TOKEN_FIELDS, counts, strict=True))
            statement = self._insert(BudgetModelUsageRow).values(
                tenant_id=tenant_id, month=month, job_id=job_id, model=model, **values
            )
            table = BudgetModelUsageRow.__table__
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["tenant_id", "month", "job_id", "model"],
                    set_={name: table.c[name] + statement.excluded[name] for name in TOKEN_FIELDS},
                )
            )

    async def set_limit(
        self, session: AsyncSession, tenant_id: str, scope: Scope, job_id: str, limit: int
    ) -> Summary:
        now = self.now()
        if scope is Scope.TENANT_MONTHLY:
            statement = self._insert(BudgetTenantLimitRow).values(
                tenant_id=tenant_id, monthly_limit_micro_usd=limit, update_time=now
            )
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["tenant_id"],
                    set_={"monthly_limit_micro_usd": limit, "update_time": now},
                )
            )
            return await self._month_summary(session, tenant_id, month_of(now), now)
        await self._ensure_job(session, tenant_id, job_id)
        await session.execute(
            update(BudgetJobRow)
            .where(BudgetJobRow.tenant_id == tenant_id, BudgetJobRow.job_id == job_id)
            .values(limit_micro_usd=limit, update_time=now)
        )
        return await self._job_summary(session, tenant_id, job_id, now)

    # -- reads -------------------------------------------------------------------------------------

    async def usage(
        self, tenant_id: str, *, month: str | None, job_id: str
    ) -> tuple[str, Summary, Summary | None]:
        """(month, the tenant's month, the job's lifetime when `job_id`)."""
        now = self.now()
        month = month or month_of(now)
        async with self.database.sessions() as session:
            tenant = await self._month_summary(session, tenant_id, month, now)
            job = await self._job_summary(session, tenant_id, job_id, now) if job_id else None
        return month, tenant, job

    async def headroom(self, tenant_id: str, job_id: str) -> Headroom:
        """What is left this month under the tenant's limit and the job's, whichever is tighter."""
        now = self.now()
        async with self.database.sessions() as session:
            room = await self._room(session, tenant_id, month_of(now), job_id, now)
        best = Headroom(UNLIMITED, None)
        if room.limit:
            best = Headroom(max(0, room.limit - room.spent - room.held), Scope.TENANT_MONTHLY)
        if room.job_limit:
            job_remaining = max(0, room.job_limit - room.job_spent - room.job_held)
            if job_remaining < best.remaining_micro_usd:
                best = Headroom(job_remaining, Scope.JOB)
        return best

    async def get_reservation(self, tenant_id: str, reservation_id: str) -> Reservation:
        async with self.database.sessions() as session:
            return _to_reservation(
                await self._reservation_row(session, tenant_id, reservation_id, lock=False), self.now()
            )

    # -- maintenance -------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Writes EXPIRED on every active reservation past its expiry; returns how many."""
        now = self.now()
        async with self.transaction() as session:
            result = await session.execute(
                update(BudgetReservationRow)
                .where(
                    BudgetReservationRow.state == ReservationState.ACTIVE,
                    BudgetReservationRow.expire_time <= now,
                )
                .values(state=ReservationState.EXPIRED, finish_time=BudgetReservationRow.expire_time)
                .execution_options(synchronize_session=False)
            )
        return result.rowcount or 0

    async def tenants(self) -> list[str]:
        """Every tenant the ledger knows."""
        async with self.database.sessions() as session:
            found: set[str] = set()
            for column in (BudgetMonthRow.tenant_id, BudgetJobRow.tenant_id, BudgetTenantLimitRow.tenant_id):
                found.update((await session.execute(select(column).distinct())).scalars())
        return sorted(found)

    async def snapshot(self, tenant_id: str, *, finished_since: datetime) -> LedgerSnapshot:
        """The tenant's limits, spending, active holds and recently finished reservations, in one read."""
        now = self.now()
        async with self.database.sessions() as session, session.begin():
            snapshot = LedgerSnapshot(tenant_id, await self.monthly_limit(session, tenant_id))
            for row in await session.execute(
                select(BudgetJobRow.job_id, BudgetJobRow.limit_micro_usd, BudgetJobRow.spent_micro_usd).where(
                    BudgetJobRow.tenant_id == tenant_id
                )
            ):
                if row.limit_micro_usd:
                    snapshot.job_limits[row.job_id] = row.limit_micro_usd
                snapshot.spent[f"j:{row.job_id}"] = row.spent_micro_usd
            for row in await session.execute(
                select(BudgetMonthRow.month, BudgetMonthRow.spent_micro_usd).where(
                    BudgetMonthRow.tenant_id == tenant_id
                )
            ):
                snapshot.spent[f"m:{row.month}"] = row.spent_micro_usd
            rows = await session.execute(
                select(BudgetReservationRow).where(
                    BudgetReservationRow.tenant_id == tenant_id,
                    BudgetReservationRow.state == ReservationState.ACTIVE,
                    BudgetReservationRow.expire_time > now,
                )
            )
            snapshot.holds = [_to_reservation(row, now) for row in rows.scalars()]
            snapshot.finished_ids = list(
                (
                    await session.execute(
                        select(BudgetReservationRow.reservation_id).where(
                            BudgetReservationRow.tenant_id == tenant_id,
                            and_(
                                BudgetReservationRow.state.in_(
                                    [ReservationState.COMMITTED, ReservationState.RELEASED]
                                ),
                                BudgetReservationRow.finish_time >= finished_since,
                            ),
                        )
                    )
                ).scalars()
            )
        return snapshot
