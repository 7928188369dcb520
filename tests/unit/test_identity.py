"""API keys and the authenticator, on SQLite and (when configured) on PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import re
import stat
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, text

from cohort.platform.config import Settings
from cohort.platform.context import Identity
from cohort.platform.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from cohort.platform.identity import SYSTEM_IDENTITY, parse_api_key
from cohort.platform.storage import create_engine, open_database
from cohort.services.identity.authenticator import ApiKeyAuthenticator
from cohort.services.identity.bootstrap import BOOTSTRAP_KEY_NAME, ensure_admin_key, service_credential
from cohort.services.identity.service import SERVICE_KEY_NAME, ApiKeyService

ADMIN = SYSTEM_IDENTITY


def member(tenant_id: str) -> Identity:
    return Identity(tenant_id=tenant_id, key_id="key_0000000000000000")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request, tmp_path):
    if request.param == "sqlite":
        db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'cohort.db'}")
        yield db
        await db.close()
        return
    postgres_url = request.getfixturevalue("postgres_url")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(postgres_url)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    db = await open_database(postgres_url, schema=schema)
    try:
        yield db
    finally:
        await db.close()
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
def store(database) -> ApiKeyService:
    return ApiKeyService(database.sessions)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class CountingStore(ApiKeyService):
    lookups = 0

    async def lookup(self, token):
        self.lookups += 1
        return await super().lookup(token)


# --- keys and lookups -------------------------------------------------------------------------


async def test_created_key_looks_up_to_its_tenant(store):
    record, plaintext = await store.create_key(ADMIN, "ci runner", tenant_id="acme")
    assert re.fullmatch(r"ck_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", plaintext)
    assert record.id == "key_" + plaintext[3:19]
    assert (record.tenant_id, record.name, record.is_admin, record.revoked) == (
        "acme",
        "ci runner",
        False,
        False,
    )
    assert record.created_at.tzinfo is not None
    assert await store.lookup(plaintext) == Identity(tenant_id="acme", key_id=record.id, is_admin=False)


async def test_the_stored_row_holds_only_the_hash_of_the_secret(store, database):
    record, plaintext = await store.create_key(ADMIN, "k", tenant_id="acme")
    _, secret = parse_api_key(plaintext)
    async with database.engine.connect() as connection:
        row = (await connection.execute(text("SELECT * FROM api_keys"))).mappings().one()
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert not any(secret in str(value) or plaintext in str(value) for value in row.values())
    assert not hasattr(record, "secret_hash")


async def test_revoked_key_is_refused_and_revoking_again_changes_nothing(store):
    record, plaintext = await store.create_key(ADMIN, "k", tenant_id="acme")
    revoked = await store.revoke_key(member("acme"), record.id)
    assert revoked.revoked_at is not None
    with pytest.raises(Unauthenticated, match="revoked"):
        await store.lookup(plaintext)
    assert await store.revoke_key(member("acme"), record.id) == revoked


async def test_wrong_secret_and_unknown_key_are_refused_alike(store):
    record, plaintext = await store.create_key(ADMIN, "k", tenant_id="acme")
    wrong_secret = plaintext[:20] + ("A" if plaintext[20] != "A" else "B") + plaintext[21:]
    unknown_id = "ck_" + "0" * 16 + plaintext[19:]
    for token in (wrong_secret, unknown_id):
        with pytest.raises(Unauthenticated) as info:
            await store.lookup(token)
        assert info.value.message == "unknown API key"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "ck_",
        "Bearer ck_0123456789abcdef_" + "a" * 43,
        "ck_0123456789ABCDEF_" + "a" * 43,
        "ck_0123456789abcdef_" + "a" * 43 + "\n",
        "ck_0123456789abcdef_short",
        "ck_0123456789abcdef_" + "a" * 300,
        "xk_0123456789abcdef_" + "a" * 43,
        "ck_0123456789abcdef_" + "é" * 43,
    ],
)
async def test_malformed_keys_are_refused(store, token):
    with pytest.raises(Unauthenticated, match="malformed API key"):
        await store.lookup(token)


async def test_another_tenants_key_is_not_found_like_a_missing_one(store):
    record, _ = await store.create_key(ADMIN, "k", tenant_id="acme")
    missing = "key_" + "f" * 16
    with pytest.raises(NotFound) as other:
        await store.get_key(member("globex"), record.id)
    with pytest.raises(NotFound) as absent:
        await store.get_key(member("globex"), missing)
    assert other.value.message == absent.value.message.replace(missing, record.id)
    with pytest.raises(NotFound):
        await store.revoke_key(member("globex"), record.id)
    assert not (await store.get_key(member("acme"), record.id)).revoked


async def test_admin_may_manage_any_tenants_keys(store):
    record, _ = await store.create_key(ADMIN, "k", tenant_id="acme")
    assert (await store.get_key(ADMIN, record.id)).tenant_id == "acme"
    keys, _ = await store.list_keys(ADMIN, tenant_id="acme")
    assert [k.id for k in keys] == [record.id]
    assert (await store.revoke_key(ADMIN, record.id)).revoked


async def test_members_cannot_reach_beyond_their_tenant_or_mint_admins(store):
    await store.create_key(ADMIN, "k", tenant_id="acme")
    acme = member("acme")
    with pytest.raises(PermissionDenied):
        await store.create_key(acme, "k", tenant_id="globex")
    with pytest.raises(PermissionDenied):
        await store.create_key(acme, "k", is_admin=True)
    with pytest.raises(PermissionDenied):
        await store.list_keys(acme, tenant_id="globex")
    record, _ = await store.create_key(acme, "own")
    assert record.tenant_id == "acme"


async def test_get_key_rejects_a_malformed_id(store):
    with pytest.raises(InvalidArgument) as info:
        await store.get_key(ADMIN, "not-a-key")
    assert info.value.field == "key_id"


# --- listing ------------------------------------------------------------------------------------


async def test_list_pages_through_keys_in_creation_order(store):
    created = [(await store.create_key(ADMIN, f"k{i}", tenant_id="acme"))[0] for i in range(5)]
    await store.create_key(ADMIN, "other", tenant_id="globex")
    pages, token = [], ""
    while True:
        page, token = await store.list_keys(member("acme"), page_size=2, page_token=token)
        pages.append([k.name for k in page])
        if not token:
            break
    assert pages == [["k0", "k1"], ["k2", "k3"], ["k4"]]
    assert {k.id for k in created} == {k.id for k in (await store.list_keys(member("acme")))[0]}


async def test_list_breaks_timestamp_ties_by_id(database):
    store = ApiKeyService(database.sessions, clock=Clock(datetime(2025, 1, 1, tzinfo=UTC)))
    ids = sorted([(await store.create_key(ADMIN, f"k{i}", tenant_id="acme"))[0].id for i in range(5)])
    seen, token = [], ""
    while True:
        page, token = await store.list_keys(ADMIN, tenant_id="acme", page_size=2, page_token=token)
        seen += [k.id for k in page]
        if not token:
            break
    assert seen == ids


async def test_list_hides_revoked_keys_unless_asked(store):
    kept, _ = await store.create_key(ADMIN, "kept", tenant_id="acme")
    gone, _ = await store.create_key(ADMIN, "gone", tenant_id="acme")
    await store.revoke_key(ADMIN, gone.id)
    assert [k.id for k in (await store.list_keys(member("acme")))[0]] == [kept.id]
    both = (await store.list_keys(member("acme"), include_revoked=True))[0]
    assert {k.id for k in both} == {kept.id, gone.id}


@pytest.mark.parametrize("page_size", [0, -1, 1001, True])
async def test_list_rejects_a_bad_page_size(store, page_size):
    with pytest.raises(InvalidArgument) as info:
        await store.list_keys(ADMIN, page_size=page_size)
    assert info.value.field == "page_size"


async def test_list_rejects_a_bad_or_foreign_page_token(store):
    for i in range(3):
        await store.create_key(ADMIN, f"k{i}", tenant_id="acme")
    _, token = await store.list_keys(member("acme"), page_size=1)
    assert token
    for bad in ("garbage!", "e30", token[:-3], "x" * 5000):
        with pytest.raises(InvalidArgument) as info:
            await store.list_keys(member("acme"), page_token=bad)
        assert info.value.field == "page_token"
    with pytest.raises(InvalidArgument) as info:
        await store.list_keys(ADMIN, tenant_id="globex", page_token=token)
    assert info.value.field == "page_token"
    with pytest.raises(InvalidArgument):
        await store.list_keys(member("acme"), include_revoked=True, page_token=token)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant_id", ["", "a b", "x" * 129, "ümlaut", "a/b"])
async def test_bad_tenant_ids_are_rejected(store, tenant_id):
    with pytest.raises(InvalidArgument) as info:
        await store.create_key(ADMIN, "k", tenant_id=tenant_id)
    assert info.value.field == "tenant_id"
    with pytest.raises(InvalidArgument):
        await store.create_tenant_if_missing(tenant_id)


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "line\nbreak"])
async def test_bad_names_are_rejected(store, name):
    with pytest.raises(InvalidArgument) as info:
        await store.create_key(ADMIN, name, tenant_id="acme")
    assert info.value.field == "display_name"


async def test_create_tenant_if_missing_creates_once(store):
    assert await store.create_tenant_if_missing("acme.prod-1_x", "Acme") is True
    assert await store.create_tenant_if_missing("acme.prod-1_x", "Other") is False
    results = await asyncio.gather(*(store.create_tenant_if_missing("racy") for _ in range(3)))
    assert sorted(results) == [False, False, True]


# --- last use -----------------------------------------------------------------------------------


async def test_last_used_at_is_written_at_most_once_a_minute(database):
    start = datetime(2025, 1, 1, tzinfo=UTC)
    clock = Clock(start)
    store = ApiKeyService(database.sessions, clock=clock)
    record, plaintext = await store.create_key(ADMIN, "k", tenant_id="acme")
    assert record.last_used_at is None
    await store.lookup(plaintext)
    assert (await store.get_key(ADMIN, record.id)).last_used_at == start
    clock.now = start + timedelta(seconds=59)
    await store.lookup(plaintext)
    assert (await store.get_key(ADMIN, record.id)).last_used_at == start
    clock.now = start + timedelta(seconds=61)
    await store.lookup(plaintext)
    assert (await store.get_key(ADMIN, record.id)).last_used_at == clock.now


async def test_a_recently_used_key_costs_no_write(database):
    store = ApiKeyService(database.sessions)
    _, plaintext = await store.create_key(ADMIN, "k", tenant_id="acme")
    await store.lookup(plaintext)
    statements: list[str] = []
    listener = lambda _c, _cur, sql, *_: statements.append(sql)  # noqa: E731
    event.listen(database.engine.sync_engine, "before_cursor_execute", listener)
    try:
        await store.lookup(plaintext)
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", listener)
    assert statements and not [sql for sql in statements if sql.lstrip().upper().startswith("UPDATE")]


# --- authenticator ------------------------------------------------------------------------------


async def test_authenticator_cache_saves_lookups(database):
    store = CountingStore(database.sessions)
    _, plaintext = await store.create_key(ADMIN, "k", tenant_id="acme")
    cached = ApiKeyAuthenticator(store, cache_seconds=60)
    for _ in range(3):
        assert (await cached.authenticate(plaintext)).tenant_id == "acme"
    assert store.lookups == 1
    uncached = ApiKeyAuthenticator(store, cache_seconds=0)
    for _ in range(3):
        await uncached.authenticate(plaintext)
    assert store.lookups == 4


async def test_authenticator_cache_expires(database):
    store = CountingStore(database.sessions)
    _, plaintext = await store.create_key(ADMIN, "k", tenant_id="acme")
    now = [100.0]
    authenticator = ApiKeyAuthenticator(store, cache_seconds=5, clock=lambda: now[0])
    await authenticator.authenticate(plaintext)
    now[0] += 4.9
    await authenticator.authenticate(plaintext)
    assert store.lookups == 1
    now[0] += 0.2
    await authenticator.authenticate(plaintext)
    assert store.lookups == 2


async def test_authenticator_does_not_cache_failures(database):
    store = CountingStore(database.sessions)
    _, plaintext = await store.create_key(ADMIN, "k", tenant_id="acme")
    authenticator = ApiKeyAuthenticator(store, cache_seconds=60)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await authenticator.authenticate(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B"))
    assert store.lookups == 2


async def test_revocation_in_this_process_takes_effect_at_once(database):
    store = ApiKeyService(database.sessions)
    record, plaintext = await store.create_key(ADMIN, "k", tenant_id="acme")
    authenticator = ApiKeyAuthenticator(store, cache_seconds=3600)
    await authenticator.authenticate(plaintext)
    await store.revoke_key(ADMIN, record.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await authenticator.authenticate(plaintext)


async def test_invalidate_drops_a_key_revoked_elsewhere(database):
    store = ApiKeyService(database.sessions)
    elsewhere = ApiKeyService(database.sessions)  # another process's store: no listener link
    record, plaintext = await store.create_key(ADMIN, "k", tenant_id="acme")
    authenticator = ApiKeyAuthenticator(store, cache_seconds=3600)
    await authenticator.authenticate(plaintext)
    await elsewhere.revoke_key(ADMIN, record.id)
    assert (await authenticator.authenticate(plaintext)).key_id == record.id  # still cached
    authenticator.invalidate(record.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await authenticator.authenticate(plaintext)


async def test_a_lookup_in_flight_during_invalidation_is_not_cached(database):
    class SlowStore(CountingStore):
        gate: asyncio.Event

        async def lookup(self, token):
            await self.gate.wait()
            return await super().lookup(token)

    store = SlowStore(database.sessions)
    store.gate = asyncio.Event()
    record, plaintext = await store.create_key(ADMIN, "k", tenant_id="acme")
    authenticator = ApiKeyAuthenticator(store, cache_seconds=3600)
    in_flight = asyncio.create_task(authenticator.authenticate(plaintext))
    await asyncio.sleep(0)
    authenticator.invalidate(record.id)
    store.gate.set()
    await in_flight
    await authenticator.authenticate(plaintext)
    assert store.lookups == 2


async def test_authenticator_cache_is_bounded(database):
    store = CountingStore(database.sessions)
    tokens = [(await store.create_key(ADMIN, f"k{i}", tenant_id="acme"))[1] for i in range(3)]
    authenticator = ApiKeyAuthenticator(store, cache_seconds=60, max_entries=2)
    for token in tokens:
        await authenticator.authenticate(token)
    await authenticator.authenticate(tokens[0])  # evicted as the oldest
    await authenticator.authenticate(tokens[2])
    assert store.lookups == 4


# --- the embedded default's admin key -----------------------------------------------------------


async def test_ensure_admin_key_creates_a_private_file_once(store, tmp_path):
    settings = Settings(data_dir=tmp_path / "not" / "yet")
    key = await ensure_admin_key(settings, store)
    path = settings.admin_key_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key
    identity = await store.lookup(key)
    assert (identity.tenant_id, identity.is_admin) == ("default", True)
    assert await ensure_admin_key(settings, store) == key
    keys, _ = await store.list_keys(ADMIN, tenant_id="default")
    assert [k.name for k in keys] == [BOOTSTRAP_KEY_NAME]
    assert [p.name for p in path.parent.iterdir()] == ["admin.key"]


async def test_ensure_admin_key_is_safe_when_called_concurrently(store, tmp_path):
    settings = Settings(data_dir=tmp_path)
    keys = await asyncio.gather(*(ensure_admin_key(settings, store) for _ in range(4)))
    assert len(set(keys)) == 1
    assert len((await store.list_keys(ADMIN, tenant_id="default"))[0]) == 1


async def test_ensure_admin_key_replaces_a_key_from_another_database(store, tmp_path):
    settings = Settings(data_dir=tmp_path)
    settings.admin_key_file.write_text("ck_0123456789abcdef_" + "a" * 43 + "\n")
    key = await ensure_admin_key(settings, store)
    assert (await store.lookup(key)).is_admin
    assert settings.admin_key_file.read_text().strip() == key


# --- protected keys: the last admin key, the service credential; the key log -------------------


async def test_the_last_active_admin_key_cannot_be_revoked(store):
    first, _ = await store.create_key(ADMIN, "first", tenant_id="default", is_admin=True)
    with pytest.raises(FailedPrecondition, match="last active admin key") as caught:
        await store.revoke_key(ADMIN, first.id)
    assert caught.value.reason == "LAST_ADMIN_KEY" and caught.value.metadata["key_id"] == first.id
    assert not (await store.get_key(ADMIN, first.id)).revoked

    # Another tenant's admin key counts (admin keys act for every tenant); a revoked one does not.
    other, _ = await store.create_key(ADMIN, "other", tenant_id="acme", is_admin=True)
    assert (await store.revoke_key(ADMIN, first.id)).revoked
    with pytest.raises(FailedPrecondition):
        await store.revoke_key(ADMIN, other.id)
    # Revoking an already revoked admin key changes nothing and is no error.
    assert (await store.revoke_key(ADMIN, first.id)).revoked


async def test_the_service_credential_is_protected_and_is_no_admin_for_people(store):
    admin, _ = await store.create_key(ADMIN, "admin", tenant_id="default", is_admin=True)
    service, plaintext = await store.create_key(ADMIN, "ignored", tenant_id="acme", service=True)
    assert (service.name, service.tenant_id, service.is_admin) == (SERVICE_KEY_NAME, "default", True)
    assert (await store.lookup(plaintext)).is_admin

    with pytest.raises(FailedPrecondition, match="service credential") as caught:
        await store.revoke_key(ADMIN, service.id)
    assert caught.value.reason == "SERVICE_CREDENTIAL"
    # It does not stand in for a person's admin key: the last one of those stays.
    with pytest.raises(FailedPrecondition, match="last active admin key"):
        await store.revoke_key(ADMIN, admin.id)
    # Nobody may borrow its name to make a key the API cannot revoke.
    with pytest.raises(InvalidArgument) as borrowed:
        await store.create_key(ADMIN, SERVICE_KEY_NAME, tenant_id="default", is_admin=True)
    assert borrowed.value.field == "display_name"
    # The operator may rotate it.
    assert (await store.revoke_key(ADMIN, service.id, allow_service_key=True)).revoked


async def test_concurrent_revocations_never_remove_every_admin_key(store):
    keys = [(await store.create_key(ADMIN, f"a{i}", tenant_id="default", is_admin=True))[0] for i in range(3)]
    results = await asyncio.gather(*(store.revoke_key(ADMIN, k.id) for k in keys), return_exceptions=True)
    assert sum(isinstance(r, FailedPrecondition) for r in results) == 1
    active, _ = await store.list_keys(ADMIN, tenant_id="default")
    assert len([k for k in active if k.is_admin]) == 1


async def test_key_creation_and_revocation_are_logged_without_secrets(store, caplog):
    caplog.set_level("INFO", logger="cohort.identity")
    acme_admin = Identity(tenant_id="acme", key_id="key_00000000000000aa", is_admin=True)
    record, plaintext = await store.create_key(acme_admin, "ci", tenant_id="globex")
    await store.revoke_key(member("globex"), record.id)
    await store.revoke_key(member("globex"), record.id)  # nothing happens: nothing is logged
    lines = [r.getMessage() for r in caplog.records if r.name == "cohort.identity"]
    assert lines == [
        f"API key {record.id} created for tenant globex (not admin) by key {acme_admin.key_id} (tenant acme)",
        f"API key {record.id} of tenant globex revoked by key key_0000000000000000 (tenant globex)",
    ]
    secret = parse_api_key(plaintext)[1]
    assert not any(secret in line for line in lines)


async def test_service_credential_is_made_once_and_replaced_when_unusable(store, tmp_path):
    settings = Settings(data_dir=tmp_path)
    key = await service_credential(settings, store)
    assert stat.S_IMODE(settings.service_key_file.stat().st_mode) == 0o600
    assert settings.service_key_file.read_text().strip() == key
    assert await service_credential(settings, store) == key
    record = await store.get_key(ADMIN, parse_api_key(key)[0])
    assert record.name == SERVICE_KEY_NAME

    await store.revoke_key(ADMIN, record.id, allow_service_key=True)  # the operator rotated it
    fresh = await service_credential(settings, store)
    assert fresh != key and (await store.lookup(fresh)).is_admin
    assert settings.service_key_file.read_text().strip() == fresh


async def test_service_credential_prefers_the_configured_key(store, tmp_path):
    _, configured = await store.create_key(ADMIN, "x", service=True)
    settings = Settings(data_dir=tmp_path, service_key=configured, api_key="ck_0123456789abcdef_" + "a" * 43)
    assert await service_credential(settings, store) == configured
    assert not settings.service_key_file.exists()
    # Production without COHORT_SERVICE_KEY keeps presenting COHORT_API_KEY, as before.
    legacy = Settings(
        data_dir=tmp_path, database_url="postgresql+asyncpg://h/db", api_key="ck_0123456789abcdef_" + "b" * 43
    )
    assert await service_credential(legacy, store) == legacy.api_key
