"""The keys a process starts with, each kept in a private file of the data directory.

`ensure_admin_key`: the embedded default's admin key for people (`<data dir>/admin.key`), made on
first start. `service_credential`: the key the services of a process present to each other
(`COHORT_SERVICE_KEY`, else `<data dir>/service.key`, made on first start). `write_secret_file` also
serves `cohort keys recover-admin`, which replaces the admin key file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import weakref
from pathlib import Path

from cohort.platform.config import Settings
from cohort.platform.context import DEFAULT_TENANT_ID
from cohort.platform.errors import Unauthenticated
from cohort.platform.identity import SYSTEM_IDENTITY
from cohort.services.identity.service import AUDIT_LOGGER, SERVICE_KEY_NAME, ApiKeyService

log = logging.getLogger(AUDIT_LOGGER)

BOOTSTRAP_KEY_NAME = "admin (created on first start)"

_admin_key_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def ensure_admin_key(settings: Settings, keys: ApiKeyService) -> str:
    """The embedded default's zero-setup admin key, created on first start.

    Returns the key in `settings.admin_key_file` when that file holds a key this database knows
    (a revoked one included: minting a fresh admin key behind the operator's back is not ours to
    do). Otherwise (first start, or a file left over from a deleted database) creates tenant
    "default" with an admin key and writes it to the file atomically with mode 0600.
    """
    async with _key_file_lock():
        path = settings.admin_key_file
        existing, unusable = await _key_in_file(path, keys)
        if existing and unusable is None:
            return existing
        if existing and unusable is not None and unusable.message == "API key revoked":
            log.warning("the admin key in %s is revoked", path)
            return existing
        if existing:
            log.warning("%s holds a key this database does not know; creating a new one", path)
        await keys.create_tenant_if_missing(DEFAULT_TENANT_ID, "Default tenant")
        record, plaintext = await keys.create_key(
            SYSTEM_IDENTITY, BOOTSTRAP_KEY_NAME, tenant_id=DEFAULT_TENANT_ID, is_admin=True
        )
        await asyncio.to_thread(write_secret_file, path, plaintext)
        log.info("created admin API key %s; it is in %s", record.id, path)
        return plaintext


async def service_credential(settings: Settings, keys: ApiKeyService) -> str:
    """The key this process's services present when they call each other.

    `COHORT_SERVICE_KEY` when set (production: one service credential made with
    `cohort keys create-service`, given to every process). Else, on the embedded default or without
    `COHORT_API_KEY`, the key in `settings.service_key_file`, created on first start; a file whose
    key this database does not know or has revoked is replaced, since the credential is the suite's
    own and nobody else holds it. Else (older production set-ups) `COHORT_API_KEY`, with a warning:
    revoking that key stops the services.
    """
    if settings.service_key:
        await _warn_unless_usable(keys, settings.service_key, "COHORT_SERVICE_KEY")
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
        existing, unusable = await _key_in_file(path, keys)
        if existing and unusable is None:
            return existing
        if existing and unusable is not None:
            log.warning("%s holds an unusable key (%s); creating a new one", path, unusable.message)
        record, plaintext = await keys.create_key(SYSTEM_IDENTITY, SERVICE_KEY_NAME, service=True)
        await asyncio.to_thread(write_secret_file, path, plaintext)
        log.info("created the service credential %s; it is in %s", record.id, path)
        return plaintext


async def _warn_unless_usable(keys: ApiKeyService, key: str, variable: str) -> None:
    try:
        identity = await keys.lookup(key)
    except Unauthenticated as exc:
        log.error("%s cannot authenticate (%s): calls between the services will fail", variable, exc.message)
        return
    if not identity.is_admin:
        log.error("%s is not an admin key: calls the services make for other tenants will fail", variable)


async def _key_in_file(path: Path, keys: ApiKeyService) -> tuple[str | None, Unauthenticated | None]:
    """The key kept in `path` (None: no file, or empty) and why this database refuses it, if it does."""
    key = await asyncio.to_thread(_read_key_file, path)
    if not key:
        return None, None
    try:
        await keys.lookup(key)
    except Unauthenticated as exc:
        return key, exc
    return key, None


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
