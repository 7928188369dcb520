"""The budget service over real gRPC: status codes, error details, concurrency, on SQLite and PostgreSQL
(and on Redis + PostgreSQL when a Redis test server is configured)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cohort.api.budget.v1 import budget_pb2 as bpb
from cohort.api.budget.v1 import budget_pb2_grpc
from cohort.platform.rpc.client import bad_request, error_info
from cohort.services.suite import start_suite


@pytest.fixture(params=["sql", "redis"])
async def suite(request, database_settings):
    settings = database_settings
    if request.param == "redis":
        if not settings.database_url:
            pytest.skip("the Redis gate runs with PostgreSQL only")
        settings = settings.with_overrides(redis_url=request.getfixturevalue("redis_url"))
    started = await start_suite(settings, ["budget"], ephemeral_ports=True)
    yield started
    await started.stop(0)


def budget(suite) -> budget_pb2_grpc.BudgetServiceStub:
    return budget_pb2_grpc.BudgetServiceStub(suite.context.channels.channel("budget"))


async def test_concurrent_reservations_over_grpc_stop_at_the_cap(suite):
    stub = budget(suite)
    await stub.SetLimit(
        bpb.SetLimitRequest(scope=bpb.LIMIT_SCOPE_TENANT_MONTHLY, limit_micro_usd=10_000), timeout=10
    )

    async def attempt(i):
        try:
            reply = await stub.Reserve(
                bpb.ReserveRequest(request_id=f"r-{i}", amount_micro_usd=300), timeout=30
            )
            return reply.reservation
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            info = error_info(error)
            assert info.reason == "BUDGET_EXHAUSTED"
            assert info.metadata["scope"] == "LIMIT_SCOPE_TENANT_MONTHLY"
            return None

    results = await asyncio.gather(*(attempt(i) for i in range(100)))
    held = [r for r in results if r is not None]
    assert len(held) == 10_000 // 300
    usage = await stub.GetUsage(bpb.GetUsageRequest(), timeout=10)
    assert usage.tenant.reserved_micro_usd == len(held) * 300 <= 10_000

    first = held[0]
    committed = await stub.Commit(
        bpb.CommitRequest(
            reservation_id=first.reservation_id,
            usage=[bpb.ModelUsage(model="toolbench-sim", input_tokens=1_000_000, output_tokens=500_000)],
        ),
        timeout=10,
    )
    assert committed.reservation.state == bpb.RESERVATION_STATE_COMMITTED
    assert committed.reservation.spent_micro_usd == 100_000 + 200_000  # $0.10 + $0.40 per million
    again = await stub.Reserve(
        bpb.ReserveRequest(request_id=f"r-{results.index(first)}", amount_micro_usd=300)
    )
    assert again.reservation == first  # the first answer, though the budget is now overspent
    released = await stub.Release(bpb.ReleaseRequest(reservation_id=held[1].reservation_id), timeout=10)
    assert released.reservation.state == bpb.RESERVATION_STATE_RELEASED
    usage = await stub.GetUsage(bpb.GetUsageRequest(), timeout=10)
    assert usage.tenant.spent_micro_usd == 300_000
    assert usage.tenant.remaining_micro_usd == 0
    assert [u.model for u in usage.tenant.usage] == ["toolbench-sim"]


BAD_INPUTS = [
    (
        "Reserve",
        bpb.ReserveRequest(amount_micro_usd=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "amount_micro_usd",
    ),
    ("Commit", bpb.CommitRequest(), grpc.StatusCode.INVALID_ARGUMENT, "reservation_id"),
    ("Commit", bpb.CommitRequest(reservation_id="rsv_nope"), grpc.StatusCode.NOT_FOUND, None),
    ("Release", bpb.ReleaseRequest(reservation_id="rsv_nope"), grpc.StatusCode.NOT_FOUND, None),
    (
        "Estimate",
        bpb.EstimateRequest(usage=[bpb.ModelUsage(model="mystery-model", input_tokens=5)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "usage[0].model",
    ),
    ("GetUsage", bpb.GetUsageRequest(month="2025/01"), grpc.StatusCode.INVALID_ARGUMENT, "month"),
    ("SetLimit", bpb.SetLimitRequest(limit_micro_usd=1), grpc.StatusCode.INVALID_ARGUMENT, "scope"),
    (
        "SetLimit",
        bpb.SetLimitRequest(scope=bpb.LIMIT_SCOPE_TENANT_MONTHLY, limit_micro_usd=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit_micro_usd",
    ),
]


async def test_bad_input_over_grpc_names_the_field_and_changes_nothing(suite):
    stub = budget(suite)
    await stub.Reserve(bpb.ReserveRequest(amount_micro_usd=10), timeout=10)
    before = await stub.GetUsage(bpb.GetUsageRequest(), timeout=10)
    for method, request_message, code, field in BAD_INPUTS:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await getattr(stub, method)(request_message, timeout=10)
        assert raised.value.code() == code, method
        if field is not None:
            assert [v.field for v in bad_request(raised.value).field_violations] == [field]
    assert await stub.GetUsage(bpb.GetUsageRequest(), timeout=10) == before


async def test_committing_a_released_reservation_is_a_failed_precondition(suite):
    stub = budget(suite)
    held = (
        await stub.Reserve(bpb.ReserveRequest(amount_micro_usd=10, job_id="job-7"), timeout=10)
    ).reservation
    await stub.Release(bpb.ReleaseRequest(reservation_id=held.reservation_id), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Commit(bpb.CommitRequest(reservation_id=held.reservation_id, cost_micro_usd=1), timeout=10)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(raised.value).metadata["state"] == "RESERVATION_STATE_RELEASED"
    usage = await stub.GetUsage(bpb.GetUsageRequest(job_id="job-7"), timeout=10)
    assert (usage.job.scope, usage.job.spent_micro_usd, usage.job.reserved_micro_usd) == (
        bpb.LIMIT_SCOPE_JOB,
        0,
        0,
    )


async def test_only_an_admin_key_sets_a_tenants_monthly_limit(suite):
    from cohort.platform.identity import SYSTEM_IDENTITY

    stub = budget(suite)
    _, secret = await suite.context.api_keys.create_key(SYSTEM_IDENTITY, "acme", tenant_id="acme")
    acme = (("authorization", f"Bearer {secret}"),)
    await stub.SetLimit(  # the admin key, acting for acme as the services do
        bpb.SetLimitRequest(scope=bpb.LIMIT_SCOPE_TENANT_MONTHLY, limit_micro_usd=5_000),
        metadata=(("cohort-tenant", "acme"),),
        timeout=10,
    )

    # 0 would mean no limit at all: the tenant must not lift (nor move) its own cap.
    for limit in (0, 10_000_000):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SetLimit(
                bpb.SetLimitRequest(
                    request_id=f"lift-{limit}", scope=bpb.LIMIT_SCOPE_TENANT_MONTHLY, limit_micro_usd=limit
                ),
                metadata=acme,
                timeout=10,
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "admin" in caught.value.details() and error_info(caught.value).reason == "ADMIN_REQUIRED"
    usage = await stub.GetUsage(bpb.GetUsageRequest(), metadata=acme, timeout=10)
    assert usage.tenant.limit_micro_usd == 5_000

    # A job's own limit stays the tenant's to set.
    job = await stub.SetLimit(
        bpb.SetLimitRequest(scope=bpb.LIMIT_SCOPE_JOB, job_id="job-1", limit_micro_usd=1_000),
        metadata=acme,
        timeout=10,
    )
    assert job.usage.limit_micro_usd == 1_000
