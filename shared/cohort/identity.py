"""Tenants and their API keys, stored hashed; the bearer-token authenticator.

A key reads `ck_<16 hex>_<secret>`: the hex part names the row (`key_<16 hex>`), the secret is
`secrets.token_urlsafe(32)` and only its SHA-256 is stored, so a leaked database yields no usable
key. The plaintext is returned exactly once, by `ApiKeyStore.create_key`.

Authorization: every method that acts on keys takes the acting `Identity` first (`actor`, the
caller's identity from `cohort.context`). A tenant's key sees and manages its own tenant's keys;
an admin key (`is_admin`) may name any tenant with `tenant_id=` and get or revoke any key, and only
an admin key may create admin keys. Another tenant's key is reported `NotFound`, exactly like a key
that does not exist. Trusted in-process callers with no caller (bootstrap, CLI) act as
`SYSTEM_IDENTITY`.

Two keys are protected so that no call can lock everyone out: the suite's service credential (an
admin key of tenant `default` named `SERVICE_KEY_NAME`, which only in-process code creates; the
services present it to each other, so revoking a person's key never stops them) cannot be revoked
through the store unless the operator insists (`allow_service_key`), and the last active admin key
that is not the service credential cannot be revoked at all. Every creation and revocation is
logged with the key id, its tenant and the acting key id, never the secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import time
import unicodedata
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cohort.config import Settings
from cohort.context import DEFAULT_TENANT_ID, Identity
from cohort.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from cohort.paging import check_page_size, decode_page_token, encode_page_token
from cohort.storage.engine import write_transaction
from cohort.storage.schema import ApiKey, Tenant, utcnow

log = logging.getLogger(__name__)

TOKEN_PREFIX = "ck_"
KEY_ID_PREFIX = "key_"
BOOTSTRAP_KEY_NAME = "admin (created on first start)"
SERVICE_KEY_NAME = "cohort services (internal service credential)"
"""The name that marks the service credential; no other key may take it."""
MAX_NAME_LENGTH = 200

LAST_USED_RESOLUTION = timedelta(minutes=1)
"""`last_used_at` is written at most this often per key, so authenticating costs no write per call."""

SYSTEM_IDENTITY = Identity(tenant_id=DEFAULT_TENANT_ID, key_id="system", is_admin=True)
"""The actor for trusted in-process callers that have no caller of their own (bootstrap, CLI)."""

_TENANT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_KEY_ID = re.compile(r"key_[0-9a-f]{16}")
_TOKEN = re.compile(r"ck_([0-9a-f]{16})_([A-Za-z0-9_-]{16,128})")
_MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True)
class ApiKeyRecord:
    """What may be shown about a key: never its secret or the secret's hash."""

    id: str
    tenant_id: str
    name: str
    is_admin: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def from_row(cls, row: ApiKey) -> ApiKeyRecord:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            is_admin=row.is_admin,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )


def parse_api_key(token: str) -> tuple[str, str]:
    """Split a plaintext key into (key id, secret); `Unauthenticated` when it is not one."""
    match = _TOKEN.fullmatch(token) if len(token) <= _MAX_TOKEN_LENGTH else None
    if match is None:
        raise Unauthenticated("malformed API key")
    return KEY_ID_PREFIX + match.group(1), match.group(2)


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _new_key() -> tuple[str, str, str]:
    """(key id, secret, plaintext key)."""
    hex_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return KEY_ID_PREFIX + hex_id, secret, f"{TOKEN_PREFIX}{hex_id}_{secret}"


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


def _validate_key_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise InvalidArgument("key_id", "is not an API key id (key_ followed by 16 hex digits)")
    return key_id


class ApiKeyStore:
    """Tenants and API keys in the database. See the module docstring for who may do what."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._revocation_listeners: list[Callable[[str], None]] = []

    def add_revocation_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(key_id)` after every revocation through this store (this process only)."""
        self._revocation_listeners.append(listener)

    async def create_tenant_if_missing(self, tenant_id: str, display_name: str | None = None) -> bool:
        """Create the tenant unless it exists; True when this call created it. Safe under races."""
        validate_tenant_id(tenant_id)
        display_name = validate_name(tenant_id if display_name is None else display_name, "display_name")
        async with write_transaction(self._sessions) as session:
            return await self._insert_tenant(session, tenant_id, display_name)

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
        key_id, secret, plaintext = _new_key()
        row = ApiKey(
            id=key_id,
            tenant_id=target,
            name=name,
            secret_hash=_hash_secret(secret),
            is_admin=is_admin,
            created_at=self._clock(),
        )
        async with write_transaction(self._sessions) as session:
            await self._insert_tenant(session, target, target)
            session.add(row)
        log.info(
            "API key %s created for tenant %s (%s) by %s",
            key_id,
            target,
            "service credential" if service else "admin" if is_admin else "not admin",
            _describe_actor(actor),
        )
        return ApiKeyRecord.from_row(row), plaintext

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

        query = select(ApiKey).where(ApiKey.tenant_id == target)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        if after is not None:
            created_at, key_id = after
            query = query.where(
                or_(ApiKey.created_at > created_at, and_(ApiKey.created_at == created_at, ApiKey.id > key_id))
            )
        query = query.order_by(ApiKey.created_at, ApiKey.id).limit(page_size + 1)
        async with self._sessions() as session:
            rows = list((await session.scalars(query)).all())

        records = [ApiKeyRecord.from_row(row) for row in rows[:page_size]]
        next_token = ""
        if len(rows) > page_size:
            last = records[-1]
            next_token = _encode_page_token(target, include_revoked, last.created_at, last.id)
        return records, next_token

    async def get_key(self, actor: Identity, key_id: str) -> ApiKeyRecord:
        async with self._sessions() as session:
            return ApiKeyRecord.from_row(await self._visible_row(session, actor, key_id))

    async def revoke_key(
        self, actor: Identity, key_id: str, *, allow_service_key: bool = False
    ) -> ApiKeyRecord:
        """Revoke the key; revoking a revoked key returns it unchanged.

        FAILED_PRECONDITION for the service credential (unless `allow_service_key`: the operator
        rotating it) and for the last active admin key other than the service credential.
        """
        revoked_now = False
        async with write_transaction(self._sessions) as session:
            row = await self._visible_row(session, actor, key_id)
            if row.revoked_at is None:
                if is_service_key(row) and not allow_service_key:
                    raise FailedPrecondition(
                        f"API key {key_id} is the suite's internal service credential: the services "
                        "call each other with it, so it cannot be revoked through the API. To rotate "
                        f"it, run `cohort keys revoke {key_id} --service-credential` on the database "
                        "and restart the services",
                        reason="SERVICE_CREDENTIAL",
                        metadata={"key_id": key_id},
                    )
                if row.is_admin and not is_service_key(row):
                    await self._check_not_last_admin(session, row)
                # Conditional, so two racing revocations keep the first timestamp.
                await session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                    .values(revoked_at=self._clock())
                    .execution_options(synchronize_session=False)
                )
                await session.refresh(row)
                revoked_now = True
            record = ApiKeyRecord.from_row(row)
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

    async def _check_not_last_admin(self, session: AsyncSession, row: ApiKey) -> None:
        others = (
            select(ApiKey.id)
            .where(
                ApiKey.is_admin.is_(True),
                ApiKey.revoked_at.is_(None),
                ApiKey.name != SERVICE_KEY_NAME,
            )
            .order_by(ApiKey.id)
        )
        if session.get_bind().dialect.name == "postgresql":
            # Two racing revocations of the last two admin keys must not both see the other one.
            # SQLite needs nothing: write_transaction holds its only write lock already.
            others = others.with_for_update()
        active = set((await session.scalars(others)).all())
        if active - {row.id}:
            return
        raise FailedPrecondition(
            f"API key {row.id} is the last active admin key; revoking it would leave nobody able to "
            "manage keys. Create another admin key first (CreateApiKey with admin, or "
            "`cohort keys create --admin`), then revoke this one",
            reason="LAST_ADMIN_KEY",
            metadata={"key_id": row.id},
        )

    async def lookup(self, token: str) -> Identity:
        """The identity a plaintext key stands for; `Unauthenticated` saying why not."""
        key_id, secret = parse_api_key(token)
        async with self._sessions() as session:
            row = await session.get(ApiKey, key_id)
        # One message for "no such key" and "wrong secret": which ids exist is nobody's business.
        if row is None or not hmac.compare_digest(row.secret_hash, _hash_secret(secret)):
            raise Unauthenticated("unknown API key")
        if row.revoked_at is not None:
            raise Unauthenticated("API key revoked")
        await self._touch(row)
        return Identity(tenant_id=row.tenant_id, key_id=row.id, is_admin=row.is_admin)

    async def _touch(self, row: ApiKey) -> None:
        now = self._clock()
        stale_before = now - LAST_USED_RESOLUTION
        if row.last_used_at is not None and row.last_used_at > stale_before:
            return
        try:
            async with write_transaction(self._sessions) as session:
                await session.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.id == row.id,
                        or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= stale_before),
                    )
                    .values(last_used_at=now)
                    .execution_options(synchronize_session=False)
                )
        except SQLAlchemyError:
            # Bookkeeping only: a busy database must not turn a valid key away.
            log.warning("could not record last use of API key %s", row.id, exc_info=True)

    async def _visible_row(self, session: AsyncSession, actor: Identity, key_id: str) -> ApiKey:
        _validate_key_id(key_id)
        row = await session.get(ApiKey, key_id)
        if row is None or not (actor.is_admin or row.tenant_id == actor.tenant_id):
            raise NotFound(f"API key {key_id} not found", metadata={"key_id": key_id})
        return row

    @staticmethod
    async def _insert_tenant(session: AsyncSession, tenant_id: str, display_name: str) -> bool:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(Tenant.__table__)
            .values(id=tenant_id, display_name=display_name, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["id"])
        )
        result = await session.execute(statement)
        return result.rowcount == 1


def is_service_key(row: ApiKey | ApiKeyRecord) -> bool:
    return bool(row.is_admin) and row.name == SERVICE_KEY_NAME


def _describe_actor(actor: Identity) -> str:
    if actor.key_id.startswith(KEY_ID_PREFIX):
        return f"key {actor.key_id} (tenant {actor.tenant_id})"
    return actor.key_id


def _encode_page_token(tenant_id: str, include_revoked: bool, created_at: datetime, key_id: str) -> str:
    return encode_page_token(["api_keys", tenant_id, include_revoked], [created_at.isoformat(), key_id])


def _decode_page_token(token: str, tenant_id: str, include_revoked: bool) -> tuple[datetime, str]:
    position = decode_page_token(token, ["api_keys", tenant_id, include_revoked])
    try:
        created_at, key_id = datetime.fromisoformat(position[0]), position[1]
    except (TypeError, ValueError, IndexError) as exc:
        raise InvalidArgument("page_token", "is not a token returned by a previous list call") from exc
    if created_at.tzinfo is None or not isinstance(key_id, str) or len(position) != 2:
        raise InvalidArgument("page_token", "is not a token returned by a previous list call")
    return created_at, key_id


@dataclass(frozen=True)
class _CacheEntry:
    identity: Identity
    expires_at: float


class ApiKeyAuthenticator:
    """`cohort.context.Authenticator` over an `ApiKeyStore`, caching successful lookups briefly.

    The cache is keyed by the SHA-256 of the whole token (the plaintext is never kept) and holds a
    lookup for `cache_seconds`; 0 disables it. Revocations through the same store drop the key from
    the cache at once; a revocation in another process takes effect within `cache_seconds`.
    Failed lookups are never cached.
    """

    def __init__(
        self,
        store: ApiKeyStore,
        cache_seconds: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cache_seconds < 0:
            raise ValueError("cache_seconds must be >= 0")
        self._store = store
        self._ttl = cache_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[bytes, _CacheEntry] = {}
        # Bumped by invalidate(), so a lookup that was in flight during a revocation is not cached.
        self._generation = 0
        store.add_revocation_listener(self.invalidate)

    async def authenticate(self, token: str) -> Identity:
        if self._ttl <= 0:
            return await self._store.lookup(token)
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        entry = self._cache.get(digest)
        if entry is not None and entry.expires_at > self._clock():
            return entry.identity
        generation = self._generation
        identity = await self._store.lookup(token)
        if generation == self._generation:
            self._remember(digest, identity)
        return identity

    def invalidate(self, key_id: str) -> None:
        """Forget any cached lookup of this key (call after revoking it)."""
        self._generation += 1
        for digest in [d for d, e in self._cache.items() if e.identity.key_id == key_id]:
            del self._cache[digest]

    def clear(self) -> None:
        self._generation += 1
        self._cache.clear()

    def _remember(self, digest: bytes, identity: Identity) -> None:
        now = self._clock()
        if len(self._cache) >= self._max_entries:
            for d in [d for d, e in self._cache.items() if e.expires_at <= now]:
                del self._cache[d]
            while len(self._cache) >= self._max_entries:
                del self._cache[next(iter(self._cache))]
        self._cache[digest] = _CacheEntry(identity, now + self._ttl)


_admin_key_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def _key_in_file(path: Path, store: ApiKeyStore) -> tuple[str | None, Unauthenticated | None]:
    """The key kept in `path` (None: no file, or empty) and why this database refuses it, if it does."""
    key = await asyncio.to_thread(_read_key_file, path)
    if not key:
        return None, None
    try:
        await store.lookup(key)
    except Unauthenticated as exc:
        return key, exc
    return key, None


async def ensure_admin_key(settings: Settings, store: ApiKeyStore) -> str:
    """The embedded default's zero-setup admin key, created on first start.

    Returns the key in `settings.admin_key_file` when that file holds a key this database knows
    (a revoked one included: minting a fresh admin key behind the operator's back is not ours to
    do). Otherwise (first start, or a file left over from a deleted database) creates tenant
    "default" with an admin key and writes it to the file atomically with mode 0600.
    """
    async with _key_file_lock():
        path = settings.admin_key_file
        existing, unusable = await _key_in_file(path, store)
        if existing and unusable is None:
            return existing
        if existing and unusable.message == "API key revoked":
            log.warning("the admin key in %s is revoked", path)
            return existing
        if existing:
            log.warning("%s holds a key this database does not know; creating a new one", path)
        await store.create_tenant_if_missing(DEFAULT_TENANT_ID, "Default tenant")
        record, plaintext = await store.create_key(
            SYSTEM_IDENTITY, BOOTSTRAP_KEY_NAME, tenant_id=DEFAULT_TENANT_ID, is_admin=True
        )
        await asyncio.to_thread(write_secret_file, path, plaintext)
        log.info("created admin API key %s; it is in %s", record.id, path)
        return plaintext


async def service_credential(settings: Settings, store: ApiKeyStore) -> str:
    """The key this process's services present when they call each other.

    `COHORT_SERVICE_KEY` when set (production: one service credential made with
    `cohort keys create-service`, given to every process). Else, on the embedded default or without
    `COHORT_API_KEY`, the key in `settings.service_key_file`, created on first start; a file whose
    key this database does not know or has revoked is replaced, since the credential is the suite's
    own and nobody else holds it. Else (older production set-ups) `COHORT_API_KEY`, with a warning:
    revoking that key stops the services.
    """
    if settings.service_key:
        await _warn_unless_usable(store, settings.service_key, "COHORT_SERVICE_KEY")
        return settings.service_key
    if settings.api_key and not settings.is_embedded:
        log.warning(
            "COHORT_SERVICE_KEY is not set: the services call each other with COHORT_API_KEY, so "
            "revoking that key stops them; create a service credential with `cohort keys "
            "create-service` and set COHORT_SERVICE_KEY to it in every process"
        )
        return settings.api_key
    async with _key_file_lock():
        path = settings.service_key_file
        existing, unusable = await _key_in_file(path, store)
        if existing and unusable is None:
            return existing
        if existing:
            log.warning("%s holds an unusable key (%s); creating a new one", path, unusable.message)
        record, plaintext = await store.create_key(SYSTEM_IDENTITY, SERVICE_KEY_NAME, service=True)
        await asyncio.to_thread(write_secret_file, path, plaintext)
        log.info("created the service credential %s; it is in %s", record.id, path)
        return plaintext


async def _warn_unless_usable(store: ApiKeyStore, key: str, variable: str) -> None:
    try:
        identity = await store.lookup(key)
    except Unauthenticated as exc:
        log.error("%s cannot authenticate (%s): calls between the services will fail", variable, exc.message)
        return
    if not identity.is_admin:
        log.error("%s is not an admin key: calls the services make for other tenants will fail", variable)


def _key_file_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _admin_key_locks.get(loop)
    if lock is None:
        lock = _admin_key_locks[loop] = asyncio.Lock()
    return lock


def _read_key_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def write_secret_file(path: Path, content: str) -> None:
    # Temp file + rename: a reader never sees a half-written key, and the key is never readable
    # by others, not even for a moment (mkstemp creates the file 0600).
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(content + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
