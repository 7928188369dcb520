"""`TrainerService.decide` at version 0: concurrent calls that find "latest" expired share one read."""

from __future__ import annotations

import asyncio

import pytest

from cohort.api.trainer.v1 import trainer_pb2
from cohort.platform.config import Settings
from cohort.platform.context import Identity, current_identity
from cohort.platform.errors import NotFound
from cohort.platform.storage import open_database
from cohort.sdk.runtime import DecisionRequest
from cohort.services.trainer.service import TrainerService


@pytest.fixture
async def service(tmp_path):
    database = await open_database(Settings(data_dir=tmp_path / "var"), migrate=True)
    current_identity.set(Identity(tenant_id="default", key_id="test", is_admin=True))
    yield TrainerService(database, latest_ttl_seconds=60.0)
    await database.close()


def count_latest_reads(service: TrainerService) -> list[str]:
    reads: list[str] = []
    read = service.store.latest_version

    async def counted(tenant_id: str, policy_id: str) -> int:
        reads.append(policy_id)
        await asyncio.sleep(0.01)  # long enough for every caller to find the read in flight
        return await read(tenant_id, policy_id)

    service.store.latest_version = counted
    return reads


async def test_concurrent_decisions_share_one_read_of_the_latest_version(service):
    created = await service.create_policy(
        trainer_pb2.CreatePolicyRequest(heads=[trainer_pb2.DecisionHead(name="tool", options=["a", "b"])])
    )
    policy_id = created.policy.policy_id
    service._latest.clear()  # as if the cached "latest" had expired
    reads = count_latest_reads(service)
    request = DecisionRequest("tool", {"x": 1.0}, seed=3)
    decisions = await asyncio.gather(*(service.decide(policy_id, 0, request) for _ in range(20)))
    assert reads == [policy_id]
    assert {d.policy.version for d in decisions} == {1}
    # cached now: no further read, and a pinned version needs none either
    await service.decide(policy_id, 0, request)
    await service.decide(policy_id, 1, request)
    assert reads == [policy_id]
    assert not service._loading


async def test_a_missing_policy_fails_every_waiting_call_and_is_read_again_next_time(service):
    reads = count_latest_reads(service)
    request = DecisionRequest("tool", {}, seed=1)
    results = await asyncio.gather(
        *(service.decide("nope", 0, request) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, NotFound) for r in results) and reads == ["nope"]
    with pytest.raises(NotFound):
        await service.decide("nope", 0, request)
    assert reads == ["nope", "nope"] and not service._loading


async def test_a_cancelled_caller_does_not_cancel_the_shared_read(service):
    created = await service.create_policy(
        trainer_pb2.CreatePolicyRequest(heads=[trainer_pb2.DecisionHead(name="tool", options=["a", "b"])])
    )
    policy_id = created.policy.policy_id
    service._latest.clear()
    reads = count_latest_reads(service)
    request = DecisionRequest("tool", {}, seed=1)
    first = asyncio.ensure_future(service.decide(policy_id, 0, request))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(service.decide(policy_id, 0, request))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).policy.version == 1
    assert reads == [policy_id]
