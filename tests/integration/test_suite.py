"""The whole suite in one process: health, reflection, identity and tenancy over real gRPC.

Runs on the embedded default (SQLite) and on the PostgreSQL test database, each in a fresh place.
"""

from __future__ import annotations

import aiohttp
import grpc
import pytest

from cohort.api.identity.v1 import identity_pb2, identity_pb2_grpc
from cohort.platform.config import GRPC_SERVICE_NAMES, SERVICE_NAMES
from cohort.platform.rpc.client import error_info
from cohort.platform.rpc.probe import grpc_health, reflected_services
from cohort.services.suite import start_suite

EXPECTED_SERVICES = {
    "collector": ["cohort.api.collector.v1.CollectorService"],
    "reward": ["cohort.api.reward.v1.RewardService"],
    "trainer": ["cohort.api.trainer.v1.TrainerService"],
    "checkpoint": ["cohort.api.checkpoint.v1.CheckpointService"],
    "budget": ["cohort.api.budget.v1.BudgetService"],
    "jobs": ["cohort.api.identity.v1.ApiKeyService", "cohort.api.jobs.v1.JobService"],
}


@pytest.fixture
async def suite(database_settings):
    suite = await start_suite(database_settings, ["all"], ephemeral_ports=True)
    try:
        yield suite
    finally:
        await suite.stop(0)


def _channel(suite, component: str) -> grpc.aio.Channel:
    return suite.context.channels.channel(component)


def _bare_channel(suite, component: str) -> grpc.aio.Channel:
    """A channel that sends no API key (the pool's channels send the suite's admin key)."""
    return grpc.aio.insecure_channel(suite.address(component))


def _bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def test_every_service_serves_health_and_reflection(suite):
    assert set(suite.servers) == set(SERVICE_NAMES)
    for name in GRPC_SERVICE_NAMES:
        channel = _channel(suite, name)
        assert await grpc_health(channel) == "SERVING", name
        listed = await reflected_services(channel)
        for service in EXPECTED_SERVICES[name]:
            assert service in listed, (name, listed)
            assert await grpc_health(channel, service) == "SERVING", service
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{suite.address('gateway')}/healthz") as response:
            assert response.status == 200
            body = await response.json()
    assert body["status"] == "SERVING"
    assert set(body["services"]) == set(GRPC_SERVICE_NAMES)


async def test_a_call_without_a_key_is_unauthenticated(suite):
    async with _bare_channel(suite, "jobs") as channel:
        stub = identity_pb2_grpc.ApiKeyServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListApiKeys(identity_pb2.ListApiKeysRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization" in caught.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListApiKeys(
                identity_pb2.ListApiKeysRequest(), metadata=_bearer("ck_nope_nope"), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_revoked_key_is_unauthenticated(suite):
    admin = identity_pb2_grpc.ApiKeyServiceStub(_channel(suite, "jobs"))
    created = await admin.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(tenant_id="acme", display_name="ci"), timeout=5
    )
    async with _bare_channel(suite, "jobs") as channel:
        stub = identity_pb2_grpc.ApiKeyServiceStub(channel)
        listed = await stub.ListApiKeys(
            identity_pb2.ListApiKeysRequest(), metadata=_bearer(created.secret), timeout=5
        )
        assert [k.key_id for k in listed.api_keys] == [created.api_key.key_id]
        assert listed.api_keys[0].tenant_id == "acme"

        revoked = await admin.RevokeApiKey(
            identity_pb2.RevokeApiKeyRequest(key_id=created.api_key.key_id), timeout=5
        )
        assert revoked.api_key.HasField("revoke_time")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListApiKeys(
                identity_pb2.ListApiKeysRequest(), metadata=_bearer(created.secret), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in caught.value.details()


async def test_another_tenants_resource_is_not_found(suite):
    admin = identity_pb2_grpc.ApiKeyServiceStub(_channel(suite, "jobs"))
    acme = await admin.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(tenant_id="acme", display_name="a"), timeout=5
    )
    globex = await admin.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(tenant_id="globex", display_name="g"), timeout=5
    )
    async with _bare_channel(suite, "jobs") as channel:
        stub = identity_pb2_grpc.ApiKeyServiceStub(channel)
        own = await stub.GetApiKey(
            identity_pb2.GetApiKeyRequest(key_id=acme.api_key.key_id),
            metadata=_bearer(acme.secret),
            timeout=5,
        )
        assert own.api_key.tenant_id == "acme"
        for call in (
            stub.GetApiKey(
                identity_pb2.GetApiKeyRequest(key_id=globex.api_key.key_id),
                metadata=_bearer(acme.secret),
                timeout=5,
            ),
            stub.RevokeApiKey(
                identity_pb2.RevokeApiKeyRequest(key_id=globex.api_key.key_id),
                metadata=_bearer(acme.secret),
                timeout=5,
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert error_info(caught.value).reason == "NOT_FOUND"
        # The refused revocation changed nothing: globex's key still works.
        still = await stub.ListApiKeys(
            identity_pb2.ListApiKeysRequest(), metadata=_bearer(globex.secret), timeout=5
        )
        assert [k.key_id for k in still.api_keys] == [globex.api_key.key_id]
        # Acting for another tenant needs an admin key.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListApiKeys(
                identity_pb2.ListApiKeysRequest(),
                metadata=(*_bearer(acme.secret), ("cohort-tenant", "globex")),
                timeout=5,
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_key_cannot_grant_itself_admin(suite):
    admin = identity_pb2_grpc.ApiKeyServiceStub(_channel(suite, "jobs"))
    acme = await admin.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(tenant_id="acme", display_name="a"), timeout=5
    )
    async with _bare_channel(suite, "jobs") as channel:
        stub = identity_pb2_grpc.ApiKeyServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateApiKey(
                identity_pb2.CreateApiKeyRequest(display_name="sneaky", admin=True),
                metadata=_bearer(acme.secret),
                timeout=5,
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateApiKey(
                identity_pb2.CreateApiKeyRequest(display_name=""), metadata=_bearer(acme.secret), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_every_rpc_of_every_service_is_served(suite):
    """No RPC of the contracts is left unimplemented: each answers an empty request with a real
    (usually INVALID_ARGUMENT) status, never UNIMPLEMENTED."""
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.Default()
    checked = 0
    for component in GRPC_SERVICE_NAMES:
        channel = _channel(suite, component)
        for name in await reflected_services(channel):
            if not name.startswith("cohort."):
                continue
            service = pool.FindServiceByName(name)
            for method in service.methods:
                request = message_factory.GetMessageClass(method.input_type)()
                response_type = message_factory.GetMessageClass(method.output_type)
                path = f"/{name}/{method.name}"
                serialize, deserialize = request.SerializeToString, response_type.FromString
                try:
                    if method.client_streaming:
                        call = channel.stream_unary(path, serialize, deserialize)
                        await call(iter(()), timeout=10)
                    elif method.server_streaming:
                        call = channel.unary_stream(path, serialize, deserialize)
                        async for _ in call(request, timeout=10):
                            break
                    else:
                        await channel.unary_unary(path, serialize, deserialize)(request, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() != grpc.StatusCode.UNIMPLEMENTED, f"{path}: {exc.details()}"
                checked += 1
    assert checked >= 36  # every RPC of the contracts but the two users implement (Run, Score)
