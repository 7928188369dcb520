"""gRPC servicer of `cohort.api.identity.v1.ApiKeyService`: proto <-> `ApiKeyService`, one call each."""

from __future__ import annotations

import grpc.aio

from cohort.api.identity.v1 import identity_pb2, identity_pb2_grpc
from cohort.platform.context import require_identity
from cohort.platform.paging import DEFAULT_PAGE_SIZE
from cohort.platform.timestamps import to_timestamp
from cohort.services.identity.service import ApiKeyService
from cohort.services.identity.store import ApiKeyRecord


def api_key_to_proto(record: ApiKeyRecord) -> identity_pb2.ApiKey:
    return identity_pb2.ApiKey(
        key_id=record.id,
        tenant_id=record.tenant_id,
        display_name=record.name,
        admin=record.is_admin,
        create_time=to_timestamp(record.created_at),
        last_use_time=to_timestamp(record.last_used_at),
        revoke_time=to_timestamp(record.revoked_at),
    )


class ApiKeyServiceServicer(identity_pb2_grpc.ApiKeyServiceServicer):
    def __init__(self, service: ApiKeyService) -> None:
        self._service = service

    async def CreateApiKey(
        self,
        request: identity_pb2.CreateApiKeyRequest,
        context: grpc.aio.ServicerContext[
            identity_pb2.CreateApiKeyRequest, identity_pb2.CreateApiKeyResponse
        ],
    ) -> identity_pb2.CreateApiKeyResponse:
        record, secret = await self._service.create_key(
            require_identity(),
            request.display_name,
            tenant_id=request.tenant_id or None,
            is_admin=request.admin,
        )
        return identity_pb2.CreateApiKeyResponse(api_key=api_key_to_proto(record), secret=secret)

    async def GetApiKey(
        self,
        request: identity_pb2.GetApiKeyRequest,
        context: grpc.aio.ServicerContext[identity_pb2.GetApiKeyRequest, identity_pb2.GetApiKeyResponse],
    ) -> identity_pb2.GetApiKeyResponse:
        record = await self._service.get_key(require_identity(), request.key_id)
        return identity_pb2.GetApiKeyResponse(api_key=api_key_to_proto(record))

    async def ListApiKeys(
        self,
        request: identity_pb2.ListApiKeysRequest,
        context: grpc.aio.ServicerContext[identity_pb2.ListApiKeysRequest, identity_pb2.ListApiKeysResponse],
    ) -> identity_pb2.ListApiKeysResponse:
        records, next_token = await self._service.list_keys(
            require_identity(),
            include_revoked=request.include_revoked,
            page_size=request.page_size or DEFAULT_PAGE_SIZE,
            page_token=request.page_token,
        )
        return identity_pb2.ListApiKeysResponse(
            api_keys=[api_key_to_proto(r) for r in records], next_page_token=next_token
        )

    async def RevokeApiKey(
        self,
        request: identity_pb2.RevokeApiKeyRequest,
        context: grpc.aio.ServicerContext[
            identity_pb2.RevokeApiKeyRequest, identity_pb2.RevokeApiKeyResponse
        ],
    ) -> identity_pb2.RevokeApiKeyResponse:
        record = await self._service.revoke_key(require_identity(), request.key_id)
        return identity_pb2.RevokeApiKeyResponse(api_key=api_key_to_proto(record))
