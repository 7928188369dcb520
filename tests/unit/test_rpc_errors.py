"""Domain errors, unexpected exceptions and aborts as a client sees them, plus health and reflection."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cohort.platform.config import Settings
from cohort.platform.errors import ERROR_DOMAIN, InvalidArgument, NotFound
from cohort.platform.rpc.client import bad_request, error_info
from cohort.platform.rpc.server import RunningServer, ServiceRegistration, serve_until_signal, start_server

SERVICE = "cohort.test.v1.ErrorService"


class ErrorServicer:
    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def not_found(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise NotFound("trajectory t1 not found")

    async def invalid(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise InvalidArgument("spec.group_size", "must be between 1 and 64")

    async def crash(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("secret internal detail /etc/passwd")

    async def stream_then_fail(self, request: bytes, context: grpc.aio.ServicerContext):
        yield b"first"
        yield b"second"
        raise NotFound("trajectory t1 not found")

    async def count_then_reject(self, requests, context: grpc.aio.ServicerContext) -> bytes:
        async for _ in requests:
            pass
        raise InvalidArgument("items", "too many")

    async def echo_then_crash(self, requests, context: grpc.aio.ServicerContext):
        async for request in requests:
            yield request
        raise RuntimeError("secret internal detail /etc/passwd")

    async def aborts(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "aborted by the servicer")

    async def aborts_then_raises(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "first abort wins")
        except grpc.aio.AbortError:
            raise RuntimeError("raised after abort") from None

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(0.3)
        return b"finished"

    async def hang(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b""


def register(servicer: ErrorServicer, server: grpc.aio.Server) -> None:
    handlers = {
        "NotFound": grpc.unary_unary_rpc_method_handler(servicer.not_found),
        "Invalid": grpc.unary_unary_rpc_method_handler(servicer.invalid),
        "Crash": grpc.unary_unary_rpc_method_handler(servicer.crash),
        "StreamThenFail": grpc.unary_stream_rpc_method_handler(servicer.stream_then_fail),
        "CountThenReject": grpc.stream_unary_rpc_method_handler(servicer.count_then_reject),
        "EchoThenCrash": grpc.stream_stream_rpc_method_handler(servicer.echo_then_crash),
        "Aborts": grpc.unary_unary_rpc_method_handler(servicer.aborts),
        "AbortsThenRaises": grpc.unary_unary_rpc_method_handler(servicer.aborts_then_raises),
        "Echo": grpc.unary_unary_rpc_method_handler(servicer.echo),
        "Hang": grpc.unary_unary_rpc_method_handler(servicer.hang),
        "Slow": grpc.unary_unary_rpc_method_handler(servicer.slow),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture
def servicer() -> ErrorServicer:
    return ErrorServicer()


async def _start(servicer: ErrorServicer, settings: Settings) -> RunningServer:
    return await start_server(
        settings, "jobs", [ServiceRegistration(SERVICE, servicer, register)], authenticator=None, port=0
    )


@pytest.fixture
async def server(servicer: ErrorServicer):
    running = await _start(servicer, Settings(auth_enabled=False))
    yield running
    await running.stop(0)


@pytest.fixture
async def channel(server: RunningServer):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


def method(channel: grpc.aio.Channel, name: str, kind: str = "unary_unary"):
    return getattr(channel, kind)(f"/{SERVICE}/{name}")


async def test_domain_error_becomes_its_status_with_error_info(channel):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(channel, "NotFound")(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "trajectory t1 not found"
    info = error_info(caught.value)
    assert info is not None
    assert (info.reason, info.domain) == ("NOT_FOUND", ERROR_DOMAIN)


async def test_invalid_argument_names_the_field(channel):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(channel, "Invalid")(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.group_size" in caught.value.details()
    violations = bad_request(caught.value)
    assert violations is not None
    assert [(v.field, v.description) for v in violations.field_violations] == [
        ("spec.group_size", "must be between 1 and 64")
    ]
    info = error_info(caught.value)
    assert info is not None and info.reason == "INVALID_ARGUMENT"
    assert info.metadata["field"] == "spec.group_size"


async def test_unexpected_exception_is_internal_without_internals(channel, caplog):
    with caplog.at_level(logging.ERROR, logger="cohort.rpc.interceptors"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method(channel, "Crash")(b"", timeout=5, metadata=(("x-request-id", "req-42"),))
    error = caught.value
    assert error.code() is grpc.StatusCode.INTERNAL
    assert error.details() == "internal error (request id req-42)"
    everything_sent = (
        repr(error.details()) + repr(error.trailing_metadata()) + repr(error.debug_error_string())
    )
    for leak in ("secret", "Traceback", "/etc/passwd", "RuntimeError"):
        assert leak not in everything_sent
    info = error_info(error)
    assert info is not None and info.reason == "INTERNAL"
    assert ("x-request-id", "req-42") in list(error.trailing_metadata())
    # The operator, unlike the client, gets the whole story.
    logged = [r for r in caplog.records if r.exc_info and "req-42" in r.getMessage()]
    assert logged and "secret internal detail" in str(logged[0].exc_info[1])


async def test_server_stream_delivers_messages_before_the_error(channel):
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in method(channel, "StreamThenFail", "unary_stream")(b"", timeout=5):
            received.append(message)
    assert received == [b"first", b"second"]
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    info = error_info(caught.value)
    assert info is not None and info.reason == "NOT_FOUND"


async def test_client_stream_error_is_mapped(channel):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(channel, "CountThenReject", "stream_unary")(iter([b"a", b"b"]), timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = bad_request(caught.value)
    assert violations is not None and violations.field_violations[0].field == "items"


async def test_bidi_stream_crash_is_internal_after_echoes(channel):
    call = method(channel, "EchoThenCrash", "stream_stream")(iter([b"a", b"b"]), timeout=5)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in call:
            received.append(message)
    assert received == [b"a", b"b"]
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert "secret" not in caught.value.details()


async def test_servicer_abort_passes_through(channel, caplog):
    with caplog.at_level(logging.ERROR, logger="cohort.rpc.interceptors"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method(channel, "Aborts")(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "aborted by the servicer"
    assert error_info(caught.value) is None
    assert not [r for r in caplog.records if r.name == "cohort.rpc.interceptors"], "an abort is not an error"


async def test_error_after_abort_keeps_the_abort_status(channel):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(channel, "AbortsThenRaises")(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "first abort wins"


async def test_cancelled_call_is_not_reported_as_an_error(channel, servicer, caplog):
    with caplog.at_level(logging.ERROR, logger="cohort.rpc.interceptors"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method(channel, "Hang")(b"", timeout=0.3)
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(servicer.cancelled.wait(), timeout=5)
        await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.name == "cohort.rpc.interceptors"]


async def test_request_id_is_adopted_and_returned(channel):
    call = method(channel, "Echo")(b"hi", timeout=5, metadata=(("x-request-id", "abc-123"),))
    assert await call == b"hi"
    assert ("x-request-id", "abc-123") in list(await call.trailing_metadata())


@pytest.mark.parametrize("supplied", ["evil id with spaces", "x" * 300])
async def test_unusable_request_id_is_replaced(channel, supplied):
    call = method(channel, "Echo")(b"hi", timeout=5, metadata=(("x-request-id", supplied),))
    await call
    returned = dict(list(await call.trailing_metadata()))["x-request-id"]
    assert returned != supplied and len(returned) == 32


async def test_message_size_limit_is_enforced(servicer):
    running = await _start(servicer, Settings(auth_enabled=False, max_message_bytes=1024))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            assert await method(channel, "Echo")(b"x" * 512, timeout=5) == b"x" * 512
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await method(channel, "Echo")(b"x" * 4096, timeout=5)
            assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await running.stop(0)


async def test_health_reports_serving_until_stop(server, channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND

    await server.stop(0)
    after = await server.health.Check(health_pb2.HealthCheckRequest(service=SERVICE), None)
    assert after.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    responses = [response async for response in call]
    names = {service.name for service in responses[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_a_taken_port_is_refused(server, servicer):
    with pytest.raises(OSError):
        await start_server(
            Settings(auth_enabled=False),
            "jobs",
            [ServiceRegistration(SERVICE, servicer, register)],
            authenticator=None,
            port=server.port,
        )


async def test_sigterm_drains_in_flight_calls_then_stops(server, channel):
    in_flight = asyncio.ensure_future(method(channel, "Slow")(b"", timeout=5))
    await asyncio.sleep(0.1)
    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(serve_until_signal([server], grace=2), timeout=5)
    assert await in_flight == b"finished"
    status = await server.health.Check(health_pb2.HealthCheckRequest(service=""), None)
    assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(channel, "Echo")(b"", timeout=2)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
