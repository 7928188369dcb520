"""Servicers for RPCs whose implementation has not landed yet.

Every RPC of such a servicer answers `UNIMPLEMENTED` with a message naming the RPC and the issue that
brings it, instead of the generated base class's bare "Method not implemented!". The methods are
derived from the service descriptor, so a new RPC in the .proto is covered without code here.
"""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor

from cohort.errors import NotImplementedYet


def pending_servicer(base: type, service: ServiceDescriptor, arrives_with: str) -> type:
    """A subclass of the generated `base` whose every RPC raises `NotImplementedYet`."""
    methods = {}
    for method in service.methods:
        message = f"{service.full_name}.{method.name} is not implemented yet; it arrives with {arrives_with}"
        methods[method.name] = _server_streaming(message) if method.server_streaming else _unary(message)
    return type(f"Pending{service.name}", (base,), methods)


def _unary(message: str):
    async def rpc(self, request, context):
        raise NotImplementedYet(message)

    return rpc


def _server_streaming(message: str):
    async def rpc(self, request, context):
        raise NotImplementedYet(message)
        yield  # an async generator, as grpc.aio expects of a server-streaming handler

    return rpc
