"""The API-key format every process shares, and the actor of trusted in-process calls.

A key reads `ck_<16 hex>_<secret>`: the hex part names the row (`key_<16 hex>`), the secret is
`secrets.token_urlsafe(32)` and only its SHA-256 is stored, so a leaked database yields no usable
key. The keys themselves (their table, who may manage which, the authenticator the servers are
given) are the identity service's, `cohort.services.identity`; the servers only see the
`cohort.platform.context.Authenticator` they are handed.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from cohort.platform.context import DEFAULT_TENANT_ID, Identity
from cohort.platform.errors import InvalidArgument, Unauthenticated

TOKEN_PREFIX = "ck_"
KEY_ID_PREFIX = "key_"

SYSTEM_IDENTITY = Identity(tenant_id=DEFAULT_TENANT_ID, key_id="system", is_admin=True)
"""The actor for trusted in-process callers that have no caller of their own (bootstrap, CLI)."""

_KEY_ID = re.compile(r"key_[0-9a-f]{16}")
_TOKEN = re.compile(r"ck_([0-9a-f]{16})_([A-Za-z0-9_-]{16,128})")
_MAX_TOKEN_LENGTH = 256


def parse_api_key(token: str) -> tuple[str, str]:
    """Split a plaintext key into (key id, secret); `Unauthenticated` when it is not one."""
    match = _TOKEN.fullmatch(token) if len(token) <= _MAX_TOKEN_LENGTH else None
    if match is None:
        raise Unauthenticated("malformed API key")
    return KEY_ID_PREFIX + match.group(1), match.group(2)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """(key id, secret, plaintext key)."""
    hex_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return KEY_ID_PREFIX + hex_id, secret, f"{TOKEN_PREFIX}{hex_id}_{secret}"


def validate_key_id(key_id: str, field: str = "key_id") -> str:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise InvalidArgument(field, "is not an API key id (key_ followed by 16 hex digits)")
    return key_id
