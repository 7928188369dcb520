"""Calling other Cohort services: one reused channel per component, credentials, deadlines.

Every call made through a `ChannelPool` carries this process's API key, the tenant and request id
of the RPC being served (so the callee acts for the same tenant and logs the same id), a trace
context, and a deadline (`rpc_timeout_seconds` unless the caller chose one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

from cohort.platform import tracing
from cohort.platform.config import Settings
from cohort.platform.context import current_identity, current_request_id
from cohort.platform.rpc import keepalive, tls
from cohort.platform.rpc.interceptors import (
    AUTHORIZATION_KEY,
    REQUEST_ID_KEY,
    STATUS_DETAILS_KEY,
    TENANT_KEY,
    client_interceptors_for,
)
from cohort.platform.transient import (
    IDEMPOTENT_RETRYABLE_CODES,
    RETRYABLE_CODES,
    Backoff,
    is_retryable_rpc_error,
)

StubT = TypeVar("StubT")


class _CallDefaults:
    """Adds credentials, tenant and request id (unless the caller set them) and a default deadline."""

    def __init__(self, api_key: str | None, default_timeout: float) -> None:
        self._api_key = api_key
        self._default_timeout = default_timeout

    def rewrite(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        identity = current_identity.get()
        request_id = current_request_id.get()
        if self._api_key and AUTHORIZATION_KEY not in metadata:
            metadata.add(AUTHORIZATION_KEY, f"Bearer {self._api_key}")
        if identity is not None and TENANT_KEY not in metadata:
            metadata.add(TENANT_KEY, identity.tenant_id)
        if request_id is not None and REQUEST_ID_KEY not in metadata:
            metadata.add(REQUEST_ID_KEY, request_id)
        timeout = self._default_timeout if details.timeout is None else details.timeout
        return details._replace(metadata=metadata, timeout=timeout)

    async def intercept(self, continuation, details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(self.rewrite(details), request)


READ_METHOD_PREFIXES = ("Get", "List", "Search", "Estimate", "Decide", "Export")


def _method_name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


def _safe_to_repeat(method: str, request: Any) -> bool:
    """A read, or a request carrying an idempotency key: sending it twice does the work once."""
    name = method.rsplit("/", 1)[-1]
    return name.startswith(READ_METHOD_PREFIXES) or bool(getattr(request, "request_id", ""))


def mark_failed_service(error: grpc.aio.AioRpcError, component: str) -> grpc.aio.AioRpcError:
    """Remembers on `error` which Cohort service the failed call went to (see `failed_service`)."""
    if getattr(error, "cohort_service", None) is None:
        error.cohort_service = component  # type: ignore[attr-defined]
    return error


def failed_service(error: grpc.aio.AioRpcError) -> str | None:
    """The Cohort service a failed call was made to, when it went through a `ChannelPool`."""
    return getattr(error, "cohort_service", None)


class _RetryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    """Retries a unary call while its peer restarts: on UNAVAILABLE (a keepalive refusal included),
    and on DEADLINE_EXCEEDED when the call is safe to repeat, with exponential backoff and full
    jitter, for at most `budget_seconds`. A failure it gives up on names the service it was calling."""

    def __init__(self, component: str, budget_seconds: float) -> None:
        self._component = component
        self._budget = budget_seconds

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        method = _method_name(client_call_details.method)
        if method.startswith("/grpc."):
            # Health and reflection report the state now: a probe must not wait for a restart.
            return await continuation(client_call_details, request)
        codes = IDEMPOTENT_RETRYABLE_CODES if _safe_to_repeat(method, request) else RETRYABLE_CODES
        backoff = Backoff(self._budget)
        while True:
            call = await continuation(client_call_details, request)
            try:
                await call
                return call
            except grpc.aio.AioRpcError as exc:
                delay = backoff.next_delay() if is_retryable_rpc_error(exc, codes) else None
                if delay is None:
                    raise mark_failed_service(exc, self._component) from None
            await asyncio.sleep(delay)


def channel_options(settings: Settings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        *keepalive.client_options(settings.keepalive_seconds),
        # A restarted peer is found again within a second or two, not after gRPC's default backoff
        # (which grows to two minutes) has left the channel failing calls meanwhile.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    if settings.tls.server_name_override:
        options.append(("grpc.ssl_target_name_override", settings.tls.server_name_override))
    return options


class ChannelPool:
    """Channels to Cohort services, opened on first use and shared by every caller."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, component: str) -> grpc.aio.Channel:
        channel = self._channels.get(component)
        if channel is None:
            channel = self._channels[component] = self._open(component)
        return channel

    def stub(self, component: str, stub_class: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        return stub_class(self.channel(component))

    async def close(self, grace: float | None = None) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(channel.close(grace) for channel in channels))

    async def __aenter__(self) -> ChannelPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _open(self, component: str) -> grpc.aio.Channel:
        settings = self._settings
        target = settings.address_of(component)
        interceptors = [
            *tracing.client_interceptors(),
            *([_RetryUnary(component, settings.rpc_retry_seconds)] if settings.rpc_retry_seconds else []),
            *client_interceptors_for(_CallDefaults(settings.api_key, settings.rpc_timeout_seconds).intercept),
        ]
        options = channel_options(settings)
        credentials = tls.channel_credentials(settings.tls)
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


def rich_status(exc: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The `google.rpc.Status` a Cohort server put in the trailers, if any."""
    for key, value in exc.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return None


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The `ErrorInfo` (reason, domain, metadata) of a failed call, if the server sent one."""
    status = rich_status(exc)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


def bad_request(exc: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest | None:
    """The `BadRequest` (field violations) of an `INVALID_ARGUMENT`, if the server sent one."""
    status = rich_status(exc)
    for detail in status.details if status is not None else ():
        violations = error_details_pb2.BadRequest()
        if detail.Unpack(violations):
            return violations
    return None
