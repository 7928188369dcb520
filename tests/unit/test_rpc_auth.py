"""The authentication interceptor and what `ChannelPool` sends on a caller's behalf."""

from __future__ import annotations

import json

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cohort.platform.config import Settings
from cohort.platform.context import Identity, current_identity, current_request_id
from cohort.platform.errors import Unauthenticated
from cohort.platform.rpc.client import ChannelPool, error_info
from cohort.platform.rpc.server import RunningServer, ServiceRegistration, start_server

SERVICE = "cohort.test.v1.WhoAmIService"
WHO_AM_I = f"/{SERVICE}/WhoAmI"

KEYS = {
    "tenant-a-key": Identity(tenant_id="tenant-a", key_id="key-a"),
    "admin-key": Identity(tenant_id="system", key_id="key-admin", is_admin=True),
}


class FakeAuthenticator:
    async def authenticate(self, token: str) -> Identity:
        try:
            return KEYS[token]
        except KeyError:
            raise Unauthenticated("unknown or revoked API key") from None


def describe_call(context: grpc.aio.ServicerContext) -> bytes:
    identity = current_identity.get()
    return json.dumps(
        {
            "tenant": identity.tenant_id if identity else None,
            "key": identity.key_id if identity else None,
            "admin": identity.is_admin if identity else None,
            "time_remaining": context.time_remaining(),
            "request_id": current_request_id.get(),
        }
    ).encode()


async def who_am_i(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return describe_call(context)


async def who_am_i_stream(request: bytes, context: grpc.aio.ServicerContext):
    yield describe_call(context)


async def who_am_i_client_stream(requests, context: grpc.aio.ServicerContext) -> bytes:
    async for _ in requests:
        pass
    return describe_call(context)


async def who_am_i_bidi(requests, context: grpc.aio.ServicerContext):
    async for _ in requests:
        yield describe_call(context)


def register(servicer: object, server: grpc.aio.Server) -> None:
    handlers = {
        "WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i),
        "WhoAmIStream": grpc.unary_stream_rpc_method_handler(who_am_i_stream),
        "WhoAmIClientStream": grpc.stream_unary_rpc_method_handler(who_am_i_client_stream),
        "WhoAmIBidi": grpc.stream_stream_rpc_method_handler(who_am_i_bidi),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture
async def server():
    running = await start_server(
        Settings(),
        "jobs",
        [ServiceRegistration(SERVICE, None, register)],
        authenticator=FakeAuthenticator(),
        port=0,
    )
    yield running
    await running.stop(0)


@pytest.fixture
async def channel(server: RunningServer):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


async def call_who_am_i(channel: grpc.aio.Channel, *metadata: tuple[str, str]) -> dict:
    return json.loads(await channel.unary_unary(WHO_AM_I)(b"", metadata=metadata, timeout=5))


async def rejection(channel: grpc.aio.Channel, *metadata: tuple[str, str]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_who_am_i(channel, *metadata)
    return caught.value


async def test_missing_authorization_is_unauthenticated(channel):
    error = await rejection(channel)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer <api key>" in error.details()
    info = error_info(error)
    assert info is not None and info.reason == "API_KEY_MISSING"


@pytest.mark.parametrize("header", ["tenant-a-key", "Basic tenant-a-key", "Bearer", "Bearer   "])
async def test_malformed_authorization_is_unauthenticated(channel, header):
    error = await rejection(channel, ("authorization", header))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in error.details()


async def test_rejected_key_is_unauthenticated(channel):
    error = await rejection(channel, ("authorization", "Bearer revoked-key"))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "unknown or revoked API key"


async def test_good_key_sets_the_identity(channel):
    seen = await call_who_am_i(channel, ("authorization", "Bearer tenant-a-key"))
    assert (seen["tenant"], seen["key"], seen["admin"]) == ("tenant-a", "key-a", False)
    assert (await call_who_am_i(channel, ("authorization", "bearer tenant-a-key")))["tenant"] == "tenant-a"


async def test_health_and_reflection_need_no_key(channel):
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    assert [response async for response in call][0].list_services_response.service


async def test_admin_acts_for_the_named_tenant(channel):
    seen = await call_who_am_i(channel, ("authorization", "Bearer admin-key"), ("cohort-tenant", "tenant-b"))
    assert (seen["tenant"], seen["key"], seen["admin"]) == ("tenant-b", "key-admin", True)
    own = await call_who_am_i(channel, ("authorization", "Bearer admin-key"))
    assert own["tenant"] == "system"


async def test_tenant_key_cannot_act_for_another_tenant(channel):
    error = await rejection(channel, ("authorization", "Bearer tenant-a-key"), ("cohort-tenant", "tenant-b"))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert info is not None and info.reason == "TENANT_MISMATCH"
    own = await call_who_am_i(
        channel, ("authorization", "Bearer tenant-a-key"), ("cohort-tenant", "tenant-a")
    )
    assert own["tenant"] == "tenant-a"


async def test_identity_does_not_leak_between_calls(channel):
    await call_who_am_i(channel, ("authorization", "Bearer admin-key"), ("cohort-tenant", "tenant-b"))
    seen = await call_who_am_i(channel, ("authorization", "Bearer tenant-a-key"))
    assert seen["tenant"] == "tenant-a"


def pool_settings(server: RunningServer, **overrides) -> Settings:
    return Settings(addresses={"jobs": f"127.0.0.1:{server.port}"}, **overrides)


async def invoke(channel: grpc.aio.Channel, kind: str, **kwargs) -> dict:
    """Calls the WhoAmI method of the given kind and returns what the handler saw."""
    if kind == "unary_unary":
        answer = await channel.unary_unary(WHO_AM_I)(b"", **kwargs)
    elif kind == "unary_stream":
        answer = [m async for m in channel.unary_stream(f"/{SERVICE}/WhoAmIStream")(b"", **kwargs)][0]
    elif kind == "stream_unary":
        answer = await channel.stream_unary(f"/{SERVICE}/WhoAmIClientStream")(iter([b""]), **kwargs)
    else:
        call = channel.stream_stream(f"/{SERVICE}/WhoAmIBidi")(iter([b""]), **kwargs)
        answer = [m async for m in call][0]
    return json.loads(answer)


KINDS = ["unary_unary", "unary_stream", "stream_unary", "stream_stream"]


@pytest.mark.parametrize("kind", KINDS)
async def test_pool_sends_the_api_key_and_a_default_deadline(server, kind):
    async with ChannelPool(pool_settings(server, api_key="tenant-a-key", rpc_timeout_seconds=7)) as pool:
        seen = await invoke(pool.channel("jobs"), kind)
        assert seen["tenant"] == "tenant-a"
        assert 5 < seen["time_remaining"] < 7.5
        chosen = await invoke(pool.channel("jobs"), kind, timeout=60)
        assert 50 < chosen["time_remaining"] < 60.5


@pytest.mark.parametrize("kind", KINDS)
async def test_pool_forwards_the_current_tenant_and_request_id(server, kind):
    async with ChannelPool(pool_settings(server, api_key="admin-key")) as pool:
        identity_token = current_identity.set(Identity(tenant_id="tenant-b", key_id="key-b"))
        request_id_token = current_request_id.set("req-forwarded")
        try:
            seen = await invoke(pool.channel("jobs"), kind)
        finally:
            current_identity.reset(identity_token)
            current_request_id.reset(request_id_token)
    assert (seen["tenant"], seen["key"], seen["admin"]) == ("tenant-b", "key-admin", True)
    assert seen["request_id"] == "req-forwarded"


async def test_pool_without_key_is_rejected_and_reuses_its_channel(server):
    async with ChannelPool(pool_settings(server)) as pool:
        assert pool.channel("jobs") is pool.channel("jobs")
        error = await rejection(pool.channel("jobs"))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_auth_can_be_disabled(server):
    running = await start_server(
        Settings(auth_enabled=False),
        "jobs",
        [ServiceRegistration(SERVICE, None, register)],
        authenticator=FakeAuthenticator(),
        port=0,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            # No key needed; every caller is trusted as admin of the tenant it names.
            assert (await call_who_am_i(channel))["tenant"] == "default"
            acting = await call_who_am_i(channel, ("cohort-tenant", "acme"))
            assert acting["tenant"] == "acme"
    finally:
        await running.stop(0)
