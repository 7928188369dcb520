"""OpenTelemetry tracing: one provider per process, a span per RPC, W3C trace context in metadata.

The interceptors are always installed. Until `configure_tracing` runs the API's no-op tracer makes
them nearly free. With exporter `none` the provider has no span processor, and a span would be built
only to be dropped (tens of microseconds per call, the largest part of a small RPC's Python work):
then no span is made, but a caller's trace context is still carried from an incoming call to the
outgoing calls it makes, so a trace crossing this process stays one trace. Adding a processor to the
provider at any time (an exporter, a test's in-memory one) turns spans on from the next call.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from cohort.platform.config import Settings, TracingExporter
from cohort.platform.rpc.interceptors import AroundInterceptor, client_interceptors_for, service_of

_tracer = trace.get_tracer("cohort.rpc")
_configure_lock = threading.Lock()
_configured = False
_TRACE_CONTEXT_KEY = "traceparent"


class _TracerProvider(TracerProvider):
    """A provider that knows whether any span processor is installed."""

    has_span_processors = False

    def add_span_processor(self, span_processor) -> None:
        super().add_span_processor(span_processor)
        self.has_span_processors = True


def _spans_recorded() -> bool:
    """False only for Cohort's own provider with no processor; any other provider records."""
    return getattr(trace.get_tracer_provider(), "has_span_processors", True)


def _incoming_carrier(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}


def _continue_caller_trace(context: grpc.aio.ServicerContext) -> None:
    """Without spans: the caller's trace context becomes this call's, for the calls it makes. Not
    detached: grpc.aio runs each RPC in its own task, whose context copy ends with it."""
    carrier = _incoming_carrier(context)
    if _TRACE_CONTEXT_KEY in carrier:
        otel_context.attach(propagate.extract(carrier))


def configure_tracing(settings: Settings, service_name: str) -> None:
    """Installs the global tracer provider; later calls in the same process do nothing."""
    global _configured
    with _configure_lock:
        if _configured:
            return
        provider = _TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
        if settings.tracing is TracingExporter.CONSOLE:
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif settings.tracing is TracingExporter.OTLP:
            # Imported here: the exporter pulls in a second gRPC stack most processes never use.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
        trace.set_tracer_provider(provider)
        _configured = True


def _rpc_attributes(method: str) -> dict[str, str]:
    return {
        "rpc.system": "grpc",
        "rpc.service": service_of(method),
        "rpc.method": method.rpartition("/")[2],
    }


class _ServerTracingInterceptor(AroundInterceptor):
    @asynccontextmanager
    async def around(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        if not _spans_recorded():
            _continue_caller_trace(context)
            yield
            return
        with _server_span(method, context) as span:
            try:
                yield
            finally:
                _record_status(span, context)

    def wrap_unary(self, method: str, behavior):
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not _spans_recorded():
                _continue_caller_trace(context)
                return await behavior(request, context)
            with _server_span(method, context) as span:
                try:
                    return await behavior(request, context)
                finally:
                    _record_status(span, context)

        return unary


def _server_span(method: str, context: grpc.aio.ServicerContext):
    return _tracer.start_as_current_span(
        method.lstrip("/"),
        context=propagate.extract(_incoming_carrier(context)),
        kind=SpanKind.SERVER,
        attributes=_rpc_attributes(method),
    )


def _record_status(span: Any, context: grpc.aio.ServicerContext) -> None:
    # An abort (how every error leaves a Cohort servicer) leaves its code on the context.
    code = context.code()
    if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        span.set_status(Status(StatusCode.ERROR, code.name))


async def _traced_call(
    continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
) -> Any:
    if not _spans_recorded():
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the caller's trace context, when there is one
        if carrier:
            metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
            details = details._replace(metadata=metadata)
        return await continuation(details, request)
    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    span = _tracer.start_span(method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(method))
    carrier = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
    try:
        call = await continuation(details._replace(metadata=metadata), request)
    except BaseException:
        span.end()
        raise
    call.add_done_callback(lambda _call: span.end())
    return call


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """A server span per RPC, continuing the caller's trace."""
    return [_ServerTracingInterceptor()]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """A client span per outgoing call, its context sent as `traceparent` metadata."""
    return client_interceptors_for(_traced_call)
