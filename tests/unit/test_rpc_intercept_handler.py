"""Interceptors applied at registration (`intercept_handler`): the same order and results as a grpc
interceptor chain, wrapped once per method rather than once per call."""

from __future__ import annotations

from contextlib import asynccontextmanager

import grpc

from cohort.config import Settings
from cohort.rpc.interceptors import AroundInterceptor, intercept_handler
from cohort.rpc.server import ServiceRegistration, _InterceptedHandlers, start_server

METHOD = "/cohort.test.v1.Svc/Call"


class Recording(AroundInterceptor):
    def __init__(self, name: str, log: list[str], only: str | None = None) -> None:
        self.name, self.log, self.only = name, log, only

    def applies_to(self, method: str) -> bool:
        return self.only is None or method == self.only

    @asynccontextmanager
    async def around(self, method, context):
        self.log.append(f"{self.name} in")
        yield
        self.log.append(f"{self.name} out")


async def test_interceptors_run_first_outermost_around_sync_and_async_behaviours():
    log: list[str] = []
    chain = [Recording("a", log), Recording("b", log), Recording("skipped", log, only="/other/Method")]

    def sync_behaviour(request, context):
        log.append("behaviour")
        return request + b"!"

    async def async_behaviour(request, context):
        log.append("behaviour")
        return request + b"?"

    for behaviour, answer in ((sync_behaviour, b"x!"), (async_behaviour, b"x?")):
        log.clear()
        handler = intercept_handler(grpc.unary_unary_rpc_method_handler(behaviour), METHOD, chain)
        assert await handler.unary_unary(b"x", None) == answer
        assert log == ["a in", "b in", "behaviour", "b out", "a out"]

    streaming = grpc.unary_stream_rpc_method_handler(lambda request, context: iter([request, request]))
    log.clear()
    handler = intercept_handler(streaming, METHOD, chain)
    assert [m async for m in handler.unary_stream(b"y", None)] == [b"y", b"y"]
    assert log == ["a in", "b in", "b out", "a out"]
    assert intercept_handler(None, METHOD, chain) is None
    assert intercept_handler(streaming, METHOD, []) is streaming


def test_a_generic_handler_is_wrapped_once_per_method():
    log: list[str] = []
    inner = grpc.method_handlers_generic_handler(
        "cohort.test.v1.Svc", {"Call": grpc.unary_unary_rpc_method_handler(lambda r, c: r)}
    )
    wrapped = _InterceptedHandlers(inner, [Recording("a", log)])

    class Details(grpc.HandlerCallDetails):
        def __init__(self, method: str) -> None:
            self.method, self.invocation_metadata = method, ()

    first = wrapped.service(Details(METHOD))
    assert first is not None and first is wrapped.service(Details(METHOD))
    assert wrapped.service(Details("/cohort.test.v1.Svc/Unknown")) is None


async def test_a_registration_may_hook_the_start_and_stop_of_the_server_it_is_given():
    seen: list[str] = []

    def register(servicer, server) -> None:
        start, stop = server.start, server.stop

        async def hooked_start():
            await start()
            seen.append("started")

        async def hooked_stop(grace):
            seen.append("stopping")
            await stop(grace)

        server.start, server.stop = hooked_start, hooked_stop

    running = await start_server(
        Settings(auth_enabled=False),
        "jobs",
        [ServiceRegistration("x.v1.S", None, register)],
        authenticator=None,
        port=0,
    )
    assert seen == ["started"]
    await running.stop(0)
    assert seen == ["started", "stopping"]
