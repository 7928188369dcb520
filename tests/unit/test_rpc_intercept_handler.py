"""Interceptors applied at registration (`intercept_handler`): the same order and results as a grpc
interceptor chain, wrapped once per method rather than once per call."""

from __future__ import annotations

from contextlib import asynccontextmanager

import grpc
import pytest

from cohort.platform.config import Settings
from cohort.platform.rpc.interceptors import AroundInterceptor, intercept_handler
from cohort.platform.rpc.server import ServiceRegistration, _InterceptedHandlers, start_server

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


def _hooked(name: str, seen: list[str], *, fail_start: bool = False) -> ServiceRegistration:
    async def on_start() -> None:
        if fail_start:
            raise RuntimeError(f"{name} cannot start")
        seen.append(f"start {name}")

    async def on_stop() -> None:
        seen.append(f"stop {name}")

    return ServiceRegistration(f"x.v1.{name}", None, lambda servicer, server: None, on_start, on_stop)


async def test_registrations_start_with_the_server_and_stop_before_it_in_reverse_order():
    seen: list[str] = []
    running = await start_server(
        Settings(auth_enabled=False),
        "jobs",
        [_hooked("A", seen), _hooked("B", seen)],
        authenticator=None,
        port=0,
    )
    assert seen == ["start A", "start B"]
    await running.stop(0)
    assert seen == ["start A", "start B", "stop B", "stop A"]


async def test_a_registration_failing_to_start_stops_those_started_and_the_server():
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="B cannot start"):
        await start_server(
            Settings(auth_enabled=False),
            "jobs",
            [_hooked("A", seen), _hooked("B", seen, fail_start=True)],
            authenticator=None,
            port=0,
        )
    assert seen == ["start A", "stop A"]
