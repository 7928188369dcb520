"""Entry point of the gateway: an aiohttp server. `cohort serve gateway` runs it alone.

- `GET /healthz` reports the gRPC health of every backend;
- `POST /jsonrpc` serves the JSON-RPC 2.0 `training.*` methods (`jsonrpc.py`);
- `GET /openapi.json` is the OpenAPI document of the REST routes (`openapi.py`);
- every other path is a REST route built from the protos' `google.api.http` rules (`transcoding.py`).

The gateway calls the backends on its own channels, which carry the HTTP caller's `Authorization`
and never the gateway process's API key.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import web
from google.rpc import code_pb2

from cohort.platform.config import GRPC_SERVICE_NAMES
from cohort.platform.rpc.probe import grpc_health
from cohort.services.gateway.errors import GatewayError, make_status, status_to_json
from cohort.services.gateway.jsonrpc import JsonRpcHandler
from cohort.services.gateway.openapi import openapi_document
from cohort.services.gateway.transcoding import (
    Backends,
    RouteTable,
    Transcoder,
    build_routes,
    error_response,
    read_paths,
)
from cohort.services.service_context import ServiceContext

log = logging.getLogger(__name__)

BACKENDS_KEY = web.AppKey("backends", Backends)


@dataclass
class RunningGateway:
    runner: web.AppRunner
    port: int
    backends: Backends | None = None
    component: str = "gateway"
    closed: bool = field(default=False)

    async def stop(self, grace: float | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        await self.runner.cleanup()
        if self.backends is not None:
            await self.backends.close()


async def backend_health(context: ServiceContext) -> dict[str, str]:
    """gRPC health status of each backend service, by name (`UNREACHABLE` when it does not answer)."""
    statuses = await asyncio.gather(
        *(grpc_health(context.channels.channel(name)) for name in GRPC_SERVICE_NAMES)
    )
    return dict(zip(GRPC_SERVICE_NAMES, statuses, strict=True))


def _only(method: str, handler):
    """`handler` for `method`; any other verb is a 405 with `Allow` and a Status body."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if request.method != method:
            status = make_status(code_pb2.UNIMPLEMENTED, f"{request.method} is not allowed on {request.path}")
            error = GatewayError(status, 405)
            error.allow = method  # type: ignore[attr-defined]
            return error_response(error)
        return await handler(request)

    return guarded


@web.middleware
async def never_a_stack_trace(request: web.Request, handler) -> web.StreamResponse:
    """The last line of defence: an unexpected error is logged and answered with an opaque 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error in the gateway on %s %s", request.method, request.path)
        status = make_status(code_pb2.INTERNAL, "internal error", reason="INTERNAL")
        return web.json_response(status_to_json(status), status=500)


def build_app(context: ServiceContext, backends: Backends | None = None) -> web.Application:
    def settings():
        return context.settings

    routes = build_routes()
    backends = backends or Backends(settings, reads=read_paths(routes))
    table = RouteTable(routes)
    transcoder = Transcoder(table, backends, settings)
    jsonrpc = JsonRpcHandler(backends, settings)
    document = openapi_document(table.routes)

    async def healthz(request: web.Request) -> web.Response:
        services = await backend_health(context)
        serving = all(status == "SERVING" for status in services.values())
        body = {"status": "SERVING" if serving else "NOT_SERVING", "services": services}
        return web.json_response(body, status=200 if serving else 503)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    # One more byte than the limit: aiohttp refuses a body whose size reaches `client_max_size`.
    app = web.Application(
        client_max_size=context.settings.gateway_max_body_bytes + 1, middlewares=[never_a_stack_trace]
    )
    app.router.add_route("*", "/healthz", _only("GET", healthz))
    app.router.add_route("*", "/openapi.json", _only("GET", openapi))
    app.router.add_route("*", "/jsonrpc", jsonrpc.handle)
    app.router.add_route("*", "/{tail:.*}", transcoder.handle)
    app[BACKENDS_KEY] = backends
    return app


async def start_gateway(context: ServiceContext, *, port: int | None = None) -> RunningGateway:
    app = build_app(context)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=context.settings.shutdown_grace_seconds)
    await runner.setup()
    site = web.TCPSite(
        runner,
        host=context.settings.host,
        port=context.settings.ports["gateway"] if port is None else port,
    )
    await site.start()
    bound_port = site._server.sockets[0].getsockname()[1]  # aiohttp exposes the bound port only here
    return RunningGateway(runner=runner, port=bound_port, backends=app[BACKENDS_KEY])
