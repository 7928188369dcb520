"""Entry point of the identity service: what it serves, and the keys a process starts with.

It has no port of its own: `cohort.services.suite` serves it on the jobs server. `start_identity`
runs before any server starts, since every server needs the authenticator it makes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cohort.api.identity.v1 import identity_pb2_grpc
from cohort.platform.config import Settings
from cohort.platform.context import Authenticator
from cohort.platform.rpc.server import ServiceRegistration
from cohort.platform.storage.engine import Database
from cohort.services.identity.authenticator import ApiKeyAuthenticator
from cohort.services.identity.bootstrap import ensure_admin_key, service_credential
from cohort.services.identity.service import ApiKeyService
from cohort.services.identity.servicer import ApiKeyServiceServicer
from cohort.services.service_context import ServiceContext


@dataclass(frozen=True)
class StartedIdentity:
    settings: Settings
    """The settings with `api_key` set to the service credential (when authentication is on)."""
    keys: ApiKeyService
    authenticator: Authenticator | None
    """None when authentication is off."""


async def start_identity(settings: Settings, database: Database) -> StartedIdentity:
    keys = ApiKeyService(database.sessions)
    if not settings.auth_enabled:
        return StartedIdentity(settings, keys, None)
    if settings.api_key is None:
        # The operator's key, for the CLI and people; the services never present it.
        await ensure_admin_key(settings, keys)
    # Not a person's key: revoking any key a person holds must not stop the suite.
    settings = settings.with_overrides(api_key=await service_credential(settings, keys))
    return StartedIdentity(settings, keys, ApiKeyAuthenticator(keys, settings.auth_cache_seconds))


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    return [
        ServiceRegistration(
            service_name="cohort.api.identity.v1.ApiKeyService",
            servicer=ApiKeyServiceServicer(context.api_keys),
            add_to_server=identity_pb2_grpc.add_ApiKeyServiceServicer_to_server,
        )
    ]
