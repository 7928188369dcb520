"""The budget domain (`BudgetService` over `BudgetLedger`, with and without the Redis gate), called directly.

Backends: SQLite, PostgreSQL (row locks) and Redis + PostgreSQL (Lua check-and-hold, PostgreSQL
ledger). The clock is injected, so months turn and reservations expire on demand.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from cohort.api.budget.v1 import budget_pb2 as bpb
from cohort.platform.context import Identity, current_identity
from cohort.platform.errors import (
    CohortError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from cohort.platform.storage import open_database
from cohort.sdk.trajectories.usage import DEFAULT_PRICES, PriceTable
from cohort.services.budget.main import build_service
from cohort.services.budget.store import BUDGET_EXHAUSTED, UNLIMITED, parse_month


class Clock:
    def __init__(self, start: datetime) -> None:
        self.moment = start

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta) -> None:
        self.moment += timedelta(**delta)


@pytest.fixture(params=["sql", "redis"])
async def budget(request, database_settings):
    """(service, clock) on each database; "redis" runs only on PostgreSQL, with the Redis gate."""
    settings = database_settings
    if request.param == "redis":
        if not settings.database_url:
            pytest.skip("the Redis gate runs with PostgreSQL only")
        settings = settings.with_overrides(redis_url=request.getfixturevalue("redis_url"))
    clock = Clock(datetime(2025, 1, 31, 23, 0, tzinfo=UTC))
    database = await open_database(settings)
    service = build_service(settings, database, now=clock)
    assert (service.gate is not None) == (request.param == "redis")
    token = current_identity.set(Identity(tenant_id=f"t-{uuid.uuid4().hex[:10]}", key_id="test"))
    try:
        yield service, clock
    finally:
        current_identity.reset(token)
        await service.close()
        await database.close()


async def set_tenant_limit(service, limit: int) -> bpb.SetLimitResponse:
    return await service.set_limit(
        bpb.SetLimitRequest(scope=bpb.LIMIT_SCOPE_TENANT_MONTHLY, limit_micro_usd=limit)
    )


async def reserve(service, amount: int, **fields) -> bpb.Reservation:
    return (await service.reserve(bpb.ReserveRequest(amount_micro_usd=amount, **fields))).reservation


async def usage(service, **fields) -> bpb.GetUsageResponse:
    return await service.get_usage(bpb.GetUsageRequest(**fields))


async def test_a_thousand_concurrent_reservations_never_exceed_the_cap(budget):
    service, _ = budget
    cap, amount = 100_000, 700
    await set_tenant_limit(service, cap)

    async def attempt():
        try:
            return await reserve(service, amount)
        except ResourceExhausted as error:
            assert error.reason == BUDGET_EXHAUSTED
            return None

    results = await asyncio.gather(*(attempt() for _ in range(1000)))
    held = [r for r in results if r is not None]
    # Exactly as many as fit: none over the cap, and none refused while there was room.
    assert len(held) == cap // amount
    assert len({r.reservation_id for r in held}) == len(held)
    before = (await usage(service)).tenant
    assert before.reserved_micro_usd == len(held) * amount <= cap
    assert before.remaining_micro_usd == cap - len(held) * amount

    await asyncio.gather(
        *(
            service.commit(bpb.CommitRequest(reservation_id=r.reservation_id, cost_micro_usd=amount))
            for r in held
        )
    )
    after = (await usage(service)).tenant
    assert after.spent_micro_usd == len(held) * amount <= cap
    assert after.reserved_micro_usd == 0
    with pytest.raises(ResourceExhausted):
        await reserve(service, amount)


async def test_concurrent_job_reservations_respect_the_job_limit(budget):
    service, _ = budget
    await service.set_limit(
        bpb.SetLimitRequest(scope=bpb.LIMIT_SCOPE_JOB, job_id="job-1", limit_micro_usd=10_000)
    )

    async def attempt(job_id):
        try:
            return await reserve(service, 300, job_id=job_id)
        except ResourceExhausted as error:
            assert error.metadata["scope"] == "LIMIT_SCOPE_JOB"
            return None

    results = await asyncio.gather(
        *(attempt("job-1") for _ in range(100)), *(attempt("job-2") for _ in range(10))
    )
    assert sum(r is not None for r in results[:100]) == 10_000 // 300
    assert all(r is not None for r in results[100:])  # job-2 has no limit of its own
    report = await usage(service, job_id="job-1")
    assert report.job.reserved_micro_usd == (10_000 // 300) * 300
    assert report.tenant.reserved_micro_usd == (10_000 // 300 + 10) * 300


async def test_a_new_month_has_a_new_limit_and_late_commits_count_in_their_month(budget):
    service, clock = budget  # 2025-01-31 23:00 UTC
    await set_tenant_limit(service, 1_000)
    january = await reserve(service, 1_000, ttl=Duration(seconds=7200))
    with pytest.raises(ResourceExhausted) as refused:
        await reserve(service, 1)
    assert refused.value.metadata["month"] == "2025-01"

    clock.advance(hours=1)  # 2025-02-01 00:00
    february = await reserve(service, 1_000)
    await service.commit(bpb.CommitRequest(reservation_id=january.reservation_id, cost_micro_usd=900))

    jan = await usage(service, month="2025-01")
    assert (jan.month, jan.tenant.spent_micro_usd, jan.tenant.reserved_micro_usd) == ("2025-01", 900, 0)
    feb = await usage(service)
    assert feb.month == "2025-02"
    assert (feb.tenant.spent_micro_usd, feb.tenant.reserved_micro_usd) == (0, 1_000)
    assert february.state == bpb.RESERVATION_STATE_ACTIVE


async def test_expired_reservations_stop_counting_and_cannot_be_committed(budget):
    service, clock = budget
    await set_tenant_limit(service, 1_000)
    held = await reserve(service, 1_000, ttl=Duration(seconds=60))
    assert held.expire_time.ToDatetime(UTC) - held.create_time.ToDatetime(UTC) == timedelta(seconds=60)
    with pytest.raises(ResourceExhausted):
        await reserve(service, 1)

    clock.advance(seconds=61)
    assert (await usage(service)).tenant.reserved_micro_usd == 0
    fresh = await reserve(service, 1_000)
    with pytest.raises(FailedPrecondition) as failed:
        await service.commit(bpb.CommitRequest(reservation_id=held.reservation_id, cost_micro_usd=5))
    assert failed.value.metadata["state"] == "RESERVATION_STATE_EXPIRED"
    released = await service.release(bpb.ReleaseRequest(reservation_id=held.reservation_id))
    assert released.reservation.state == bpb.RESERVATION_STATE_EXPIRED
    assert (await usage(service)).tenant.spent_micro_usd == 0

    clock.advance(minutes=11)  # the default TTL (10 minutes) of `fresh` has passed too
    assert await service.maintain() >= 1
    with pytest.raises(FailedPrecondition):
        await service.commit(bpb.CommitRequest(reservation_id=fresh.reservation_id))


async def test_repeats_return_the_first_answer(budget):
    service, _ = budget
    await set_tenant_limit(service, 1_000)
    first = await reserve(service, 600, request_id="r-1")
    again = await reserve(service, 600, request_id="r-1")
    assert again == first
    assert (await usage(service)).tenant.reserved_micro_usd == 600
    with pytest.raises(InvalidArgument) as reused:
        await reserve(service, 601, request_id="r-1")
    assert reused.value.field == "request_id"

    commit = bpb.CommitRequest(request_id="c-1", reservation_id=first.reservation_id, cost_micro_usd=500)
    committed = await service.commit(commit)
    assert await service.commit(commit) == committed
    # By reservation too: a second commit (another id, another cost) returns the first one unchanged.
    other = bpb.CommitRequest(request_id="c-2", reservation_id=first.reservation_id, cost_micro_usd=999)
    assert (await service.commit(other)).reservation == committed.reservation
    assert (await usage(service)).tenant.spent_micro_usd == 500
    with pytest.raises(FailedPrecondition):
        await service.release(bpb.ReleaseRequest(reservation_id=first.reservation_id))

    second = await reserve(service, 400)
    release = bpb.ReleaseRequest(request_id="x-1", reservation_id=second.reservation_id)
    released = await service.release(release)
    assert released.reservation.state == bpb.RESERVATION_STATE_RELEASED
    assert await service.release(release) == released
    with pytest.raises(FailedPrecondition):
        await service.commit(bpb.CommitRequest(reservation_id=second.reservation_id))
    report = (await usage(service)).tenant
    assert (report.spent_micro_usd, report.reserved_micro_usd, report.remaining_micro_usd) == (500, 0, 500)


async def test_committing_more_than_reserved_books_the_actual_cost(budget):
    service, _ = budget
    await set_tenant_limit(service, 1_000)
    held = await reserve(service, 800, job_id="j")
    gpt = bpb.ModelUsage(model="gpt-4o", input_tokens=100_000, output_tokens=10_000)  # $0.25 + $0.10
    committed = await service.commit(
        bpb.CommitRequest(reservation_id=held.reservation_id, usage=[gpt], cost_micro_usd=7)
    )
    assert committed.reservation.spent_micro_usd == 350_007
    report = await usage(service, job_id="j")
    assert report.tenant.spent_micro_usd == report.job.spent_micro_usd == 350_007
    assert report.tenant.remaining_micro_usd == 0
    assert [(u.model, u.input_tokens, u.output_tokens) for u in report.tenant.usage] == [
        ("gpt-4o", 100_000, 10_000)
    ]
    assert list(report.job.usage) == list(report.tenant.usage)
    with pytest.raises(ResourceExhausted):
        await reserve(service, 1)


async def test_estimate_prices_usage_and_names_the_limit_that_does_not_fit(budget):
    service, _ = budget
    await set_tenant_limit(service, 1_000_000)
    await service.set_limit(
        bpb.SetLimitRequest(scope=bpb.LIMIT_SCOPE_JOB, job_id="j", limit_micro_usd=200_000)
    )
    usage_lines = [bpb.ModelUsage(model="claude-sonnet-4", input_tokens=50_000, output_tokens=10_000)]
    expected = int(
        50_000 * DEFAULT_PRICES["claude-sonnet-4"].input + 10_000 * DEFAULT_PRICES["claude-sonnet-4"].output
    )
    tenant_only = await service.estimate(bpb.EstimateRequest(usage=usage_lines))
    assert (tenant_only.cost_micro_usd, tenant_only.remaining_micro_usd, tenant_only.fits) == (
        expected,
        1_000_000,
        True,
    )
    with_job = await service.estimate(bpb.EstimateRequest(job_id="j", usage=usage_lines))
    assert (with_job.remaining_micro_usd, with_job.fits) == (200_000, expected <= 200_000)
    assert with_job.limiting_scope == bpb.LIMIT_SCOPE_JOB
    await set_tenant_limit(service, 0)  # 0: no limit
    unlimited = await service.estimate(bpb.EstimateRequest(usage=usage_lines))
    assert (unlimited.remaining_micro_usd, unlimited.fits) == (UNLIMITED, True)


async def test_default_limit_applies_until_one_is_set_and_tenants_are_separate(budget):
    service, _ = budget
    report = (await usage(service)).tenant
    assert report.limit_micro_usd == 100_000_000  # the settings default, $100
    held = await reserve(service, 1_000)
    token = current_identity.set(Identity(tenant_id="someone-else", key_id="k2"))
    try:
        with pytest.raises(NotFound):
            await service.commit(bpb.CommitRequest(reservation_id=held.reservation_id))
        assert (await usage(service)).tenant.reserved_micro_usd == 0
    finally:
        current_identity.reset(token)


BAD_INPUTS = [
    ("reserve", bpb.ReserveRequest(amount_micro_usd=0), InvalidArgument, "amount_micro_usd"),
    ("reserve", bpb.ReserveRequest(amount_micro_usd=-5), InvalidArgument, "amount_micro_usd"),
    ("reserve", bpb.ReserveRequest(amount_micro_usd=5, ttl=Duration(seconds=-1)), InvalidArgument, "ttl"),
    (
        "reserve",
        bpb.ReserveRequest(amount_micro_usd=5, ttl=Duration(seconds=30 * 86400)),
        InvalidArgument,
        "ttl",
    ),
    ("reserve", bpb.ReserveRequest(amount_micro_usd=5, job_id="j" * 129), InvalidArgument, "job_id"),
    ("reserve", bpb.ReserveRequest(amount_micro_usd=5, request_id="r" * 201), InvalidArgument, "request_id"),
    ("commit", bpb.CommitRequest(), InvalidArgument, "reservation_id"),
    ("commit", bpb.CommitRequest(reservation_id="rsv_missing"), NotFound, None),
    (
        "commit",
        bpb.CommitRequest(reservation_id="rsv_x", cost_micro_usd=-1),
        InvalidArgument,
        "cost_micro_usd",
    ),
    (
        "commit",
        bpb.CommitRequest(
            reservation_id="rsv_x", usage=[bpb.ModelUsage(model="no-such-model", input_tokens=1)]
        ),
        InvalidArgument,
        "usage[0].model",
    ),
    (
        "commit",
        bpb.CommitRequest(reservation_id="rsv_x", usage=[bpb.ModelUsage(model="gpt-4o", output_tokens=-1)]),
        InvalidArgument,
        "usage[0].output_tokens",
    ),
    ("release", bpb.ReleaseRequest(), InvalidArgument, "reservation_id"),
    ("release", bpb.ReleaseRequest(reservation_id="rsv_missing"), NotFound, None),
    (
        "estimate",
        bpb.EstimateRequest(usage=[bpb.ModelUsage(model="gpt-4o"), bpb.ModelUsage(model="nope")]),
        InvalidArgument,
        "usage[1].model",
    ),
    ("estimate", bpb.EstimateRequest(usage=[bpb.ModelUsage(model="")]), InvalidArgument, "usage[0].model"),
    ("get_usage", bpb.GetUsageRequest(month="2025-13"), InvalidArgument, "month"),
    ("get_usage", bpb.GetUsageRequest(month="January"), InvalidArgument, "month"),
    ("set_limit", bpb.SetLimitRequest(limit_micro_usd=5), InvalidArgument, "scope"),
    (
        "set_limit",
        bpb.SetLimitRequest(scope=bpb.LIMIT_SCOPE_TENANT_MONTHLY, limit_micro_usd=-1),
        InvalidArgument,
        "limit_micro_usd",
    ),
    (
        "set_limit",
        bpb.SetLimitRequest(scope=bpb.LIMIT_SCOPE_JOB, limit_micro_usd=5),
        InvalidArgument,
        "job_id",
    ),
    (
        "set_limit",
        bpb.SetLimitRequest(scope=bpb.LIMIT_SCOPE_TENANT_MONTHLY, job_id="j", limit_micro_usd=5),
        InvalidArgument,
        "job_id",
    ),
]


async def test_bad_input_names_the_field_and_changes_nothing(budget):
    service, _ = budget
    await set_tenant_limit(service, 5_000)
    await reserve(service, 1_000, job_id="j")
    held = await reserve(service, 500)
    await service.commit(bpb.CommitRequest(reservation_id=held.reservation_id, cost_micro_usd=400))
    before = (await usage(service, job_id="j"), await usage(service, month="2025-01"))
    for method, request, error_type, field in BAD_INPUTS:
        with pytest.raises(error_type) as raised:
            await getattr(service, method)(request)
        if field is not None:
            assert raised.value.field == field, (method, request)
    after = (await usage(service, job_id="j"), await usage(service, month="2025-01"))
    assert after == before
    assert before[0].tenant.spent_micro_usd == 400 and before[0].job.reserved_micro_usd == 1_000


def test_months_parse_strictly():
    assert parse_month("2025-02") == "2025-02"
    for bad in ("2025-2", "2025-00", "25-01", "2025-01-01", ""):
        with pytest.raises(InvalidArgument):
            parse_month(bad)


def test_unknown_models_are_unknown_to_the_price_table():
    # The estimate's INVALID_ARGUMENT for an unknown model relies on this.
    assert not PriceTable.load().is_known("no-such-model")
    assert isinstance(InvalidArgument("x", "y"), CohortError)


async def test_redis_is_rebuilt_from_the_ledger_when_it_loses_its_data(budget):
    service, _ = budget
    if service.gate is None:
        pytest.skip("Redis backend only")
    await set_tenant_limit(service, 1_000)
    held = await reserve(service, 600, job_id="j")
    await service.commit(bpb.CommitRequest(reservation_id=held.reservation_id, cost_micro_usd=300))
    await reserve(service, 500)
    tenant_id = current_identity.get().tenant_id
    redis = await service.gate._connection()
    await redis.delete(
        *service.gate._keys(tenant_id, "holds", "expiry", "spent", "reserved", "limits", "settled")
    )

    # Spent 300 + held 500 come back from the ledger: 200 left, not 1,000.
    with pytest.raises(ResourceExhausted):
        await reserve(service, 201)
    await reserve(service, 200)
    assert await service.gate.reconcile(tenant_id) == 2  # the two active holds
    with pytest.raises(ResourceExhausted):
        await reserve(service, 1)


async def test_maintenance_runs_in_the_background_when_due(budget):
    service, clock = budget
    held = await reserve(service, 100, ttl=Duration(seconds=5))
    clock.advance(seconds=6)
    service.maintain_seconds = 0.0
    await reserve(service, 100)  # starts the background sweep
    await service._maintenance
    released = await service.release(bpb.ReleaseRequest(reservation_id=held.reservation_id))
    assert released.reservation.state == bpb.RESERVATION_STATE_EXPIRED
    assert await service.ledger.sweep() == 0  # already written down by the background run


async def test_a_commit_past_the_limit_is_booked_and_says_the_limit_is_exceeded(budget):
    service, _ = budget
    await set_tenant_limit(service, 100_000)  # $0.10
    held = await reserve(service, 60_000, job_id="j")
    within = await service.commit(
        bpb.CommitRequest(reservation_id=held.reservation_id, cost_micro_usd=70_000)
    )
    # Above its reservation but inside the limit: booked, 30,000 left, nothing exceeded.
    assert (within.limit_exceeded, within.limiting_scope, within.over_limit_micro_usd) == (False, 0, 0)
    assert within.remaining_micro_usd == 30_000

    other = await reserve(service, 10_000)  # held by someone else: counts against what is left
    held = await reserve(service, 20_000, job_id="j")
    thousand = await service.commit(
        bpb.CommitRequest(reservation_id=held.reservation_id, cost_micro_usd=1_000_000_000)
    )
    # The money was spent: the ledger books all of it, and the answer names the limit and the excess.
    assert thousand.reservation.spent_micro_usd == 1_000_000_000
    assert thousand.limit_exceeded and thousand.limiting_scope == bpb.LIMIT_SCOPE_TENANT_MONTHLY
    assert thousand.over_limit_micro_usd == 70_000 + 1_000_000_000 + 10_000 - 100_000
    assert thousand.remaining_micro_usd == 0
    report = await usage(service, job_id="j")
    assert report.tenant.spent_micro_usd == report.job.spent_micro_usd == 1_000_070_000
    with pytest.raises(ResourceExhausted) as refused:
        await reserve(service, 1)
    assert refused.value.reason == BUDGET_EXHAUSTED
    # A repeat of the commit is the first answer, not a second booking.
    again = await service.commit(
        bpb.CommitRequest(reservation_id=held.reservation_id, cost_micro_usd=1_000_000_000)
    )
    assert again.reservation == thousand.reservation
    assert (await usage(service)).tenant.spent_micro_usd == 1_000_070_000
    await service.release(bpb.ReleaseRequest(reservation_id=other.reservation_id))


async def test_a_commit_past_the_jobs_limit_names_the_job_scope(budget):
    service, _ = budget
    await service.set_limit(bpb.SetLimitRequest(scope=bpb.LIMIT_SCOPE_JOB, job_id="j", limit_micro_usd=500))
    held = await reserve(service, 400, job_id="j")
    committed = await service.commit(
        bpb.CommitRequest(reservation_id=held.reservation_id, cost_micro_usd=650)
    )
    assert (committed.limit_exceeded, committed.limiting_scope, committed.over_limit_micro_usd) == (
        True,
        bpb.LIMIT_SCOPE_JOB,
        150,
    )
    assert committed.remaining_micro_usd == 0
    assert (await usage(service, job_id="j")).job.spent_micro_usd == 650


async def test_releasing_a_jobs_reservations_frees_only_that_jobs_active_holds(budget):
    service, _ = budget
    await set_tenant_limit(service, 1_000)
    crashed = [await reserve(service, 300, job_id="job-a"), await reserve(service, 200, job_id="job-a")]
    done = await reserve(service, 100, job_id="job-a")
    await service.commit(bpb.CommitRequest(reservation_id=done.reservation_id, cost_micro_usd=100))
    elsewhere = await reserve(service, 400, job_id="job-b")
    with pytest.raises(ResourceExhausted):
        await reserve(service, 1, job_id="job-a")  # 100 spent + 900 held

    request = bpb.ReleaseJobReservationsRequest(request_id="takeover-2", job_id="job-a")
    released = await service.release_job_reservations(request)
    assert sorted(r.reservation_id for r in released.reservations) == sorted(
        r.reservation_id for r in crashed
    )
    assert {r.state for r in released.reservations} == {bpb.RESERVATION_STATE_RELEASED}
    assert released.released_micro_usd == 500
    report = await usage(service, job_id="job-a")
    assert (report.job.reserved_micro_usd, report.job.spent_micro_usd) == (0, 100)
    assert report.tenant.reserved_micro_usd == 400  # job-b keeps its hold
    # Freed at once, not after the ttl: the new attempt can reserve what the crashed one held.
    fresh = await reserve(service, 500, job_id="job-a")

    assert await service.release_job_reservations(request) == released  # a repeat: the first answer
    assert (await usage(service)).tenant.reserved_micro_usd == 900
    again = await service.release_job_reservations(bpb.ReleaseJobReservationsRequest(job_id="job-b"))
    assert [r.reservation_id for r in again.reservations] == [elsewhere.reservation_id]
    with pytest.raises(FailedPrecondition):
        await service.commit(bpb.CommitRequest(reservation_id=crashed[0].reservation_id, cost_micro_usd=1))
    committed = await service.commit(bpb.CommitRequest(reservation_id=fresh.reservation_id, cost_micro_usd=5))
    assert committed.reservation.state == bpb.RESERVATION_STATE_COMMITTED
    with pytest.raises(InvalidArgument) as missing:
        await service.release_job_reservations(bpb.ReleaseJobReservationsRequest())
    assert missing.value.field == "job_id"


async def test_estimate_adds_a_cost_the_caller_priced(budget):
    service, _ = budget
    await set_tenant_limit(service, 1_000_000)
    lines = [bpb.ModelUsage(model="toolbench-sim", output_tokens=1_000_000)]  # $0.40
    estimate = await service.estimate(bpb.EstimateRequest(usage=lines, cost_micro_usd=700_000))
    assert (estimate.cost_micro_usd, estimate.fits, estimate.limiting_scope) == (
        1_100_000,
        False,
        bpb.LIMIT_SCOPE_TENANT_MONTHLY,
    )
    with pytest.raises(InvalidArgument) as bad:
        await service.estimate(bpb.EstimateRequest(cost_micro_usd=-1))
    assert bad.value.field == "cost_micro_usd"
