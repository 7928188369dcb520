"""The gateway: JSON-RPC 2.0 `training.*` methods and grpc-gateway-compatible REST over HTTP.

It owns no state; it calls the other services over gRPC. This package is built on aiohttp (one
well-kept dependency that gives an async HTTP server with streaming responses).
"""
