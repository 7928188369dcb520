"""Helpers the integration tests share for calling a running suite over gRPC."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from cohort.api.identity.v1 import identity_pb2, identity_pb2_grpc


async def tenant_key(suite, tenant: str) -> tuple[tuple[str, str]]:
    """Call metadata with a new API key of `tenant`, created through the suite's ApiKeyService."""
    keys = identity_pb2_grpc.ApiKeyServiceStub(suite.context.channels.channel("jobs"))
    created = await keys.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(tenant_id=tenant, display_name="t"), timeout=5
    )
    return (("authorization", f"Bearer {created.secret}"),)


async def rpc_error(call) -> grpc.aio.AioRpcError:
    """The error `call` fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value
