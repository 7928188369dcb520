"""Entry point of the gateway: an aiohttp server. `cohort serve gateway` runs it alone.

`GET /healthz` reports the gRPC health of every backend. JSON-RPC (`POST /jsonrpc`) and the REST
routes arrive with the gateway issue (#7); until then every other path answers 501 with a
`google.rpc.Status` body saying so.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from cohort.config import GRPC_SERVICE_NAMES
from cohort.rpc.probe import grpc_health
from cohort.services.context import ServiceContext

UNIMPLEMENTED = 12


@dataclass
class RunningGateway:
    runner: web.AppRunner
    port: int
    component: str = "gateway"

    async def stop(self, grace: float | None = None) -> None:
        await self.runner.cleanup()


async def backend_health(context: ServiceContext) -> dict[str, str]:
    """gRPC health status of each backend service, by name (`UNREACHABLE` when it does not answer)."""
    statuses = await asyncio.gather(
        *(grpc_health(context.channels.channel(name)) for name in GRPC_SERVICE_NAMES)
    )
    return dict(zip(GRPC_SERVICE_NAMES, statuses, strict=True))


def build_app(context: ServiceContext) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        services = await backend_health(context)
        serving = all(status == "SERVING" for status in services.values())
        body = {"status": "SERVING" if serving else "NOT_SERVING", "services": services}
        return web.json_response(body, status=200 if serving else 503)

    async def not_yet(request: web.Request) -> web.Response:
        message = (
            f"{request.method} {request.path} is not implemented yet; it arrives with the gateway issue (#7)"
        )
        return web.json_response({"code": UNIMPLEMENTED, "message": message, "details": []}, status=501)

    app = web.Application(client_max_size=context.settings.max_message_bytes)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", not_yet)
    return app


async def start_gateway(context: ServiceContext, *, port: int | None = None) -> RunningGateway:
    runner = web.AppRunner(
        build_app(context), access_log=None, shutdown_timeout=context.settings.shutdown_grace_seconds
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        host=context.settings.host,
        port=context.settings.ports["gateway"] if port is None else port,
    )
    await site.start()
    bound_port = site._server.sockets[0].getsockname()[1]  # aiohttp exposes the bound port only here
    return RunningGateway(runner=runner, port=bound_port)
