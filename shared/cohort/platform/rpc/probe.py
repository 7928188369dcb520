"""Probes of running services: gRPC health, the services listed by reflection, HTTP health."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

PROBE_TIMEOUT_SECONDS = 3.0


async def grpc_health(channel: grpc.aio.Channel, service: str = "") -> str:
    """`SERVING`, `NOT_SERVING`, ... or `UNREACHABLE` when the call fails."""
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=PROBE_TIMEOUT_SECONDS
        )
    except grpc.aio.AioRpcError:
        return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def reflected_services(channel: grpc.aio.Channel) -> list[str]:
    """Full names of the services the server lists by reflection."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=PROBE_TIMEOUT_SECONDS
    )
    async for reply in call:
        return sorted(s.name for s in reply.list_services_response.service)
    return []


async def http_health(address: str) -> str:
    """The `status` of an HTTP `/healthz`, or `UNREACHABLE`."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)
        ) as session:
            async with session.get(f"http://{address}/healthz") as response:
                return (await response.json()).get("status", f"HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return "UNREACHABLE"
