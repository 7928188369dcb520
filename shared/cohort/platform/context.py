"""Who is calling, and under which request id, for the duration of one RPC.

The server interceptors set these context variables before a servicer runs; domain code reads the
tenant from here, never from a request body. Outgoing calls to other Cohort services forward them.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Protocol

from cohort.platform.errors import Unauthenticated

DEFAULT_TENANT_ID = "default"
"""The tenant of the embedded default's admin key, and of every call when authentication is off."""


@dataclass(frozen=True)
class Identity:
    tenant_id: str
    key_id: str
    is_admin: bool = False


current_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "cohort_identity", default=None
)
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cohort_request_id", default=None
)


def require_identity() -> Identity:
    """The caller's identity; `Unauthenticated` when the call carried none."""
    identity = current_identity.get()
    if identity is None:
        raise Unauthenticated("this call needs an API key: send 'authorization: Bearer <key>'")
    return identity


def current_tenant() -> str:
    return require_identity().tenant_id


class Authenticator(Protocol):
    """Turns a bearer token into an identity, or raises `Unauthenticated` saying why."""

    async def authenticate(self, token: str) -> Identity: ...
