"""OpenTelemetry: a span per server and client call, one trace across services."""

from __future__ import annotations

import contextlib

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from cohort.platform.config import Settings
from cohort.platform.rpc.client import ChannelPool
from cohort.platform.rpc.server import ServiceRegistration, start_server
from cohort.platform.tracing import configure_tracing

SERVICE = "cohort.test.v1.RelayService"


def _registration(handler) -> ServiceRegistration:
    def register(servicer: object, server: grpc.aio.Server) -> None:
        handlers = {"Call": grpc.unary_unary_rpc_method_handler(handler)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    return ServiceRegistration(SERVICE, None, register)


@contextlib.asynccontextmanager
async def relay_to_leaf(settings: Settings, leaf, on_relay=lambda context: None):
    """Two servers: `jobs` relays each call to `reward`, whose handler is `leaf`; yields the stub
    calling the relay."""
    downstream = await start_server(settings, "reward", [_registration(leaf)], authenticator=None, port=0)
    pool_to_leaf = ChannelPool(settings.with_overrides(addresses={"reward": f"127.0.0.1:{downstream.port}"}))

    async def relay(request: bytes, context) -> bytes:
        on_relay(context)
        return await pool_to_leaf.channel("reward").unary_unary(f"/{SERVICE}/Call")(b"")

    upstream = await start_server(settings, "jobs", [_registration(relay)], authenticator=None, port=0)
    try:
        async with ChannelPool(
            settings.with_overrides(addresses={"jobs": f"127.0.0.1:{upstream.port}"})
        ) as pool:
            yield pool.channel("jobs").unary_unary(f"/{SERVICE}/Call")
    finally:
        await pool_to_leaf.close()
        await upstream.stop(0)
        await downstream.stop(0)


async def test_trace_context_flows_from_service_to_service():
    settings = Settings(auth_enabled=False)
    configure_tracing(settings, "cohort-test")
    exporter = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))

    async def leaf(request: bytes, context) -> bytes:
        return b"leaf"

    async with relay_to_leaf(settings, leaf) as call:
        assert await call(b"") == b"leaf"

    spans = [s for s in exporter.get_finished_spans() if s.attributes.get("rpc.service") == SERVICE]
    clients = [s for s in spans if s.kind is SpanKind.CLIENT]
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(clients) == 2 and len(servers) == 2
    assert len({s.context.trace_id for s in spans}) == 1, "one trace across both services"
    outer_client = next(c for c in clients if c.parent is None)
    outer_server = next(s for s in servers if s.parent.span_id == outer_client.context.span_id)
    inner_client = next(c for c in clients if c.parent is not None)
    inner_server = next(s for s in servers if s is not outer_server)
    assert inner_client.parent.span_id == outer_server.context.span_id
    assert inner_server.parent.span_id == inner_client.context.span_id
    assert outer_server.attributes["rpc.method"] == "Call"


async def test_without_span_processors_the_callers_trace_reaches_the_next_service(monkeypatch):
    from cohort.platform import tracing

    # Cohort's provider with exporter `none`: no processor, so a span would only be dropped.
    monkeypatch.setattr(tracing.trace, "get_tracer_provider", lambda: tracing._TracerProvider())
    settings = Settings(auth_enabled=False)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    seen: dict[str, object] = {}
    leaf_traceparents: list[str | None] = []

    async def leaf(request: bytes, context) -> bytes:
        leaf_traceparents.append(dict(context.invocation_metadata()).get("traceparent"))
        return b"leaf"

    def on_relay(context) -> None:
        seen.setdefault("relay_span", trace.get_current_span().get_span_context())

    async with relay_to_leaf(settings, leaf, on_relay) as call:
        assert await call(b"", metadata=(("traceparent", traceparent),)) == b"leaf"
        assert await call(b"") == b"leaf"  # no trace context: none is made up

    relay_span = seen["relay_span"]
    assert relay_span.is_remote and format(relay_span.span_id, "016x") == "00f067aa0ba902b7", (
        "the relay runs in the caller's span context, with no span of its own"
    )
    assert leaf_traceparents == [traceparent, None], "the next service continues the caller's trace"
