"""Starting and stopping a Cohort gRPC server: interceptors, health, reflection, TLS, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cohort.platform import tracing
from cohort.platform.config import Settings
from cohort.platform.context import Authenticator
from cohort.platform.rpc import keepalive, tls
from cohort.platform.rpc.interceptors import (
    AroundInterceptor,
    AuthInterceptor,
    ErrorInterceptor,
    RequestIdInterceptor,
    TrustedCallerInterceptor,
    intercept_handler,
)

# The name from before the platform moved into cohort.platform: log filters select on it.
logger = logging.getLogger("cohort.rpc.server")

_SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class ServiceRegistration:
    """One gRPC service of a component, as the generated code registers it."""

    service_name: str
    """Full proto name, e.g. `cohort.api.jobs.v1.JobService`: used for health and reflection."""
    servicer: object
    add_to_server: Callable[[object, grpc.aio.Server], None]
    """The generated `add_XxxServicer_to_server`."""
    on_start: Callable[[], Awaitable[None]] | None = None
    """Runs once the server is listening (background work of the service, for example)."""
    on_stop: Callable[[], Awaitable[None]] | None = None
    """Runs when the server is asked to stop, before it stops: the database is still open."""


class RunningServer:
    """A started server; `stop` reports NOT_SERVING first so load balancers drain it."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health: health.aio.HealthServicer,
        component: str,
        port: int,
        default_grace: float,
        on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.server = server
        self.health = health
        self.component = component
        self.port = port
        self._default_grace = default_grace
        self._on_stop = tuple(on_stop)

    async def stop(self, grace: float | None = None) -> None:
        await self.health.enter_graceful_shutdown()
        try:
            for hook in reversed(self._on_stop):  # the last started stops first
                try:
                    await hook()
                except Exception:
                    logger.exception("%s: a service failed to stop cleanly", self.component)
        finally:
            await self.server.stop(self._default_grace if grace is None else grace)


_WRAPPED_METHODS_CACHED = 4096


class _InterceptedHandlers(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come wrapped in the interceptors, each wrapped once."""

    def __init__(self, inner: grpc.GenericRpcHandler, interceptors: Sequence[AroundInterceptor]) -> None:
        self._inner = inner
        self._interceptors = interceptors
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler | None]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = intercept_handler(handler, method, self._interceptors)
        if len(self._wrapped) >= _WRAPPED_METHODS_CACHED:  # a handler that serves any method name
            self._wrapped.clear()
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class _InterceptingServer(grpc.aio.Server):
    """The server as registrations (and `RunningServer`) see it: every handler registered through it
    is wrapped in the interceptors, so grpc runs no interceptor chain per call to find a handler.
    Everything else is the grpc server's."""

    def __init__(self, server: grpc.aio.Server, interceptors: Sequence[AroundInterceptor]) -> None:
        self._server = server
        self._interceptors = tuple(interceptors)

    def __getattr__(self, name: str) -> object:
        if name == "_server":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self._server, name)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_InterceptedHandlers(handler, self._interceptors) for handler in generic_rpc_handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                name: intercept_handler(handler, f"/{service_name}/{name}", self._interceptors)
                for name, handler in method_handlers.items()
            },
        )

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        return await self._server.wait_for_termination(timeout)


def _server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # gRPC enables SO_REUSEPORT by default, which lets a second server silently share a port.
        ("grpc.so_reuseport", 0),
        *keepalive.server_options(settings.keepalive_seconds),
    ]


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_server(
    settings: Settings,
    component: str,
    registrations: Sequence[ServiceRegistration],
    *,
    authenticator: Authenticator | None,
    port: int | None = None,
) -> RunningServer:
    """Builds, binds and starts the server of `component` (`port=0` picks a free port)."""
    # Order matters: errors sits outside auth so a rejected key is mapped like any domain error,
    # and inside request id so an INTERNAL message can quote the id.
    interceptors: list[AroundInterceptor] = [
        *tracing.server_interceptors(),
        RequestIdInterceptor(),
        ErrorInterceptor(),
    ]
    if not settings.auth_enabled:
        interceptors.append(TrustedCallerInterceptor())
    elif authenticator is not None:
        interceptors.append(AuthInterceptor(authenticator))
    else:
        raise ValueError(f"{component}: authentication is enabled, so an authenticator is required")

    server = _InterceptingServer(grpc.aio.server(options=_server_options(settings)), interceptors)
    for registration in registrations:
        registration.add_to_server(registration.servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names = [registration.service_name for registration in registrations]
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )

    address = settings.listen_address(component) if port is None else _host_port(settings.host, port)
    credentials = tls.server_credentials(settings.tls)
    try:
        if credentials is None:
            bound_port = server.add_insecure_port(address)
        else:
            bound_port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise OSError(f"{component}: cannot listen on {address}: {exc}") from exc
    if bound_port == 0:
        raise OSError(f"{component}: cannot listen on {address}")

    await server.start()
    started: list[Callable[[], Awaitable[None]]] = []
    try:
        for registration in registrations:
            if registration.on_start is not None:
                await registration.on_start()
            if registration.on_stop is not None:
                started.append(registration.on_stop)
    except BaseException:
        for hook in reversed(started):
            await hook()
        await server.stop(0)
        raise
    for name in ("", *service_names):
        await health_servicer.set(name, _SERVING)
    logger.info(
        "%s listening on %s (%s)", component, _host_port(settings.host, bound_port), settings.tls.mode.value
    )
    return RunningServer(
        server, health_servicer, component, bound_port, settings.shutdown_grace_seconds, on_stop=started
    )


async def serve_until_signal(servers: Sequence[RunningServer], grace: float) -> None:
    """Serves until SIGTERM or SIGINT, then stops every server, letting in-flight calls finish."""
    loop = asyncio.get_running_loop()
    received = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, received.set)
    try:
        await received.wait()
        logger.info("signal received: stopping %d server(s), grace %.1fs", len(servers), grace)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        # Also on cancellation, so a cancelled main task still drains and closes its servers.
        await asyncio.gather(*(running.stop(grace) for running in servers))
