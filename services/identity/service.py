"""Tenants and their API keys: who may create, see and revoke which key, and lookups of a key.

Only the SHA-256 of a key's secret is stored (the format is `cohort.platform.identity`'s); the plaintext is
returned exactly once, by `ApiKeyService.create_key`.

Authorization: every method that acts on keys takes the acting `Identity` first (`actor`, the
caller's identity from `cohort.platform.context`). A tenant's key sees and manages its own tenant's keys;
an admin key (`is_admin`) may name any tenant with `tenant_id=` and get or revoke any key, and only
an admin key may create admin keys. Another tenant's key is reported `NotFound`, exactly like a key
that does not exist. Trusted in-process callers with no caller (bootstrap, CLI) act as
`cohort.platform.identity.SYSTEM_IDENTITY`.

Two keys are protected so that no call can lock everyone out: the suite's service credential (an
admin key of tenant `default` named `SERVICE_KEY_NAME`, which only in-process code creates; the
services present it to each other, so revoking a person's key never stops them) cannot be revoked
unless the operator insists (`allow_service_key`), and the last active admin key that is not the
service credential cannot be revoked at all. When no usable admin key is left, the operator mints
one straight on the database (`cohort keys recover-admin`: `create_key` as `SYSTEM_IDENTITY`).
Every creation and revocation is logged with the key id, its tenant and the acting key id, never
the secret.
"""

from __future__ import annotations

import hmac
import logging
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime, timedelta

from cohort.platform.context import DEFAULT_TENANT_ID, Identity
from cohort.platform.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from cohort.platform.identity import KEY_ID_PREFIX, hash_secret, new_api_key, parse_api_key, validate_key_id
from cohort.platform.paging import check_page_size, decode_page_token, encode_page_token
from cohort.platform.storage import Sessions
from cohort.platform.storage.schema import utcnow
from cohort.services.identity.store import ApiKeyRecord, ApiKeyStore

AUDIT_LOGGER = "cohort.identity"
"""The key log's name: operators select it, and the `cohort keys` commands print it."""
log = logging.getLogger(AUDIT_LOGGER)

SERVICE_KEY_NAME = "cohort services (internal service credential)"
"""The name that marks the service credential; no other key may take it."""
MAX_NAME_LENGTH = 200

LAST_USED_RESOLUTION = timedelta(minutes=1)
"""`last_used_at` is written at most this often per key, so authenticating costs no write per call."""

_TENANT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def validate_tenant_id(tenant_id: str, field: str = "tenant_id") -> str:
    if not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidArgument(field, "must be 1 to 128 characters of letters, digits, '.', '_' or '-'")
    return tenant_id


def validate_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument(field, "must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidArgument(field, "must not contain control characters")
    return name


def is_service_key(record: ApiKeyRecord) -> bool:
    return record.is_admin and record.name == SERVICE_KEY_NAME


class ApiKeyService:
    """Tenants and API keys. See the module docstring for who may do what."""

    def __init__(self, sessions: Sessions, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._store = ApiKeyStore(sessions)
        self._clock = clock
        self._revocation_listeners: list[Callable[[str], None]] = []

    def add_revocation_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(key_id)` after every revocation through this service (this process only)."""
        self._revocation_listeners.append(listener)

    async def create_tenant_if_missing(self, tenant_id: str, display_name: str | None = None) -> bool:
        """Create the tenant unless it exists; True when this call created it. Safe under races."""
        validate_tenant_id(tenant_id)
        display_name = validate_name(tenant_id if display_name is None else display_name, "display_name")
        async with self._store.transaction() as session:
            return await self._store.insert_tenant_if_missing(session, tenant_id, display_name)

    async def create_key(
        self,
        actor: Identity,
        name: str,
        *,
        tenant_id: str | None = None,
        is_admin: bool = False,
        service: bool = False,
    ) -> tuple[ApiKeyRecord, str]:
        """A new key for `tenant_id` (default: the actor's tenant) and its plaintext, shown only now.

        An admin creating a key for a tenant that does not exist yet creates the tenant. `service`
        makes the service credential (an admin key of tenant `default`, named `SERVICE_KEY_NAME`);
        no RPC passes it, so only in-process code (start-up, the CLI) can.
        """
        if service:
            name, tenant_id, is_admin = SERVICE_KEY_NAME, DEFAULT_TENANT_ID, True
        elif name == SERVICE_KEY_NAME:
            # The name is what protects the service credential from revocation: nobody may borrow it.
            raise InvalidArgument("display_name", "is reserved for the suite's service credential")
        target = actor.tenant_id if tenant_id is None else validate_tenant_id(tenant_id)
        validate_name(name, "display_name")
        if target != actor.tenant_id and not actor.is_admin:
            raise PermissionDenied("only an admin key can create keys for another tenant")
        if is_admin and not actor.is_admin:
            raise PermissionDenied("only an admin key can create admin keys")
        key_id, secret, plaintext = new_api_key()
        record = ApiKeyRecord(
            id=key_id,
            tenant_id=target,
            name=name,
            is_admin=is_admin,
            created_at=self._clock(),
            last_used_at=None,
            revoked_at=None,
        )
        async with self._store.transaction() as session:
            await self._store.insert_tenant_if_missing(session, target, target)
            self._store.add_key(session, record, hash_secret(secret))
        log.info(
            "API key %s created for tenant %s (%s) by %s",
            key_id,
            target,
            "service credential" if service else "admin" if is_admin else "not admin",
            _describe_actor(actor),
        )
        return record, plaintext

    async def list_keys(
        self,
        actor: Identity,
        *,
        tenant_id: str | None = None,
        include_revoked: bool = False,
        page_size: int = 50,
        page_token: str = "",
    ) -> tuple[list[ApiKeyRecord], str]:
        """One page of a tenant's keys, oldest first, and the next page's token ("" at the end)."""
        check_page_size(page_size)
        target = actor.tenant_id if tenant_id is None else validate_tenant_id(tenant_id)
        if target != actor.tenant_id and not actor.is_admin:
            raise PermissionDenied("only an admin key can list another tenant's keys")
        after = _decode_page_token(page_token, target, include_revoked) if page_token else None
        found = await self._store.page(
            target, include_revoked=include_revoked, after=after, limit=page_size + 1
        )
        records = found[:page_size]
        next_token = ""
        if len(found) > page_size:
            last = records[-1]
            next_token = _encode_page_token(target, include_revoked, last.created_at, last.id)
        return records, next_token

    async def get_key(self, actor: Identity, key_id: str) -> ApiKeyRecord:
        validate_key_id(key_id)
        return _visible(actor, key_id, await self._store.get(key_id))

    async def revoke_key(
        self, actor: Identity, key_id: str, *, allow_service_key: bool = False
    ) -> ApiKeyRecord:
        """Revoke the key; revoking a revoked key returns it unchanged.

        FAILED_PRECONDITION for the service credential (unless `allow_service_key`: the operator
        rotating it) and for the last active admin key other than the service credential.
        """
        validate_key_id(key_id)
        revoked_now = False
        async with self._store.transaction() as session:
            record = _visible(actor, key_id, await self._store.get(key_id, session))
            if record.revoked_at is None:
                if is_service_key(record) and not allow_service_key:
                    raise FailedPrecondition(
                        f"API key {key_id} is the suite's internal service credential: the services "
                        "call each other with it, so it cannot be revoked through the API. To rotate "
                        f"it, run `cohort keys revoke {key_id} --service-credential` on the database "
                        "and restart the services",
                        reason="SERVICE_CREDENTIAL",
                        metadata={"key_id": key_id},
                    )
                if record.is_admin and not is_service_key(record):
                    others = await self._store.active_admin_ids(session, except_named=SERVICE_KEY_NAME)
                    if not others - {key_id}:
                        raise _last_admin_key(key_id)
                record = await self._store.revoke(session, key_id, self._clock())
                revoked_now = True
        if revoked_now:
            log.warning(
                "API key %s of tenant %s%s revoked by %s",
                key_id,
                record.tenant_id,
                " (admin)" if record.is_admin else "",
                _describe_actor(actor),
            )
        for listener in self._revocation_listeners:
            listener(key_id)
        return record

    async def lookup(self, token: str) -> Identity:
        """The identity a plaintext key stands for; `Unauthenticated` saying why not."""
        key_id, secret = parse_api_key(token)
        found = await self._store.credential(key_id)
        # One message for "no such key" and "wrong secret": which ids exist is nobody's business.
        if found is None or not hmac.compare_digest(found[1], hash_secret(secret)):
            raise Unauthenticated("unknown API key")
        record = found[0]
        if record.revoked:
            raise Unauthenticated("API key revoked")
        await self._note_use(record)
        return Identity(tenant_id=record.tenant_id, key_id=record.id, is_admin=record.is_admin)

    async def _note_use(self, record: ApiKeyRecord) -> None:
        now = self._clock()
        stale_before = now - LAST_USED_RESOLUTION
        if record.last_used_at is not None and record.last_used_at > stale_before:
            return
        # Bookkeeping only: a busy database must not turn a valid key away.
        if not await self._store.mark_used(record.id, now, unless_used_after=stale_before):
            log.warning("could not record last use of API key %s", record.id)


def _visible(actor: Identity, key_id: str, record: ApiKeyRecord | None) -> ApiKeyRecord:
    if record is None or not (actor.is_admin or record.tenant_id == actor.tenant_id):
        raise NotFound(f"API key {key_id} not found", metadata={"key_id": key_id})
    return record


def _last_admin_key(key_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"API key {key_id} is the last active admin key; revoking it would leave nobody able to "
        "manage keys. Create another admin key first (CreateApiKey with admin, or "
        "`cohort keys create --admin`), then revoke this one",
        reason="LAST_ADMIN_KEY",
        metadata={"key_id": key_id},
    )


def _describe_actor(actor: Identity) -> str:
    if actor.key_id.startswith(KEY_ID_PREFIX):
        return f"key {actor.key_id} (tenant {actor.tenant_id})"
    return actor.key_id


def _encode_page_token(tenant_id: str, include_revoked: bool, created_at: datetime, key_id: str) -> str:
    return encode_page_token(["api_keys", tenant_id, include_revoked], [created_at.isoformat(), key_id])


def _decode_page_token(token: str, tenant_id: str, include_revoked: bool) -> tuple[datetime, str]:
    position = decode_page_token(token, ["api_keys", tenant_id, include_revoked])
    not_ours = InvalidArgument("page_token", "is not a token returned by a previous list call")
    if position is None or len(position) != 2:
        raise not_ours
    try:
        created_at, key_id = datetime.fromisoformat(position[0]), position[1]
    except (TypeError, ValueError) as exc:
        raise not_ours from exc
    if created_at.tzinfo is None or not isinstance(key_id, str):
        raise not_ours
    return created_at, key_id
