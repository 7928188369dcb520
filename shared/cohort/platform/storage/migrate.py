"""Schema migrations (Alembic), run in code at start-up; no alembic.ini needed.

Several services may start at once against one database, so an upgrade is serialized three ways:
an in-process lock (Alembic keeps its current migration context in module globals, so two upgrades
interleaving on one event loop would trample each other), a PostgreSQL advisory lock held by the
migration's transaction (other processes), and on SQLite a `BEGIN IMMEDIATE` that takes the file's
write lock, waiting out the busy timeout.
"""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cohort.platform.config import Settings
from cohort.platform.storage.engine import SQLITE_BEGIN_OPTION, Database, create_engine, database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

MIGRATION_LOCK_KEY = 0x436F686F72744D67
"""The PostgreSQL advisory lock key ("CohortMg") every migrating process takes."""

_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def alembic_config(url: str | URL = "", *, schema: str | None = None) -> Config:
    """An Alembic config pointing at Cohort's migrations, for `alembic.command` calls.

    `url` and `schema` are only used when env.py has to build its own engine (a developer running
    `command.revision(cfg, autogenerate=True)`); `upgrade_to_head` passes its open connection instead.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        rendered = database_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    config.attributes["schema"] = schema
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at; None for a database Cohort never migrated."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current_revision)


async def open_database(
    target: Settings | str | URL, *, migrate: bool = True, schema: str | None = None
) -> Database:
    """Open the configured database, running migrations to head first unless `migrate=False`."""
    engine = create_engine(target, schema=schema)
    try:
        if migrate:
            await upgrade_to_head(engine)
    except BaseException:
        await engine.dispose()
        raise
    return Database(engine)


async def upgrade_to_head(engine_or_url: AsyncEngine | str | URL) -> None:
    """Bring the database to the latest migration; a no-op when it is already there."""
    if isinstance(engine_or_url, AsyncEngine):
        await _upgrade_serialized(engine_or_url)
        return
    engine = create_engine(engine_or_url)
    try:
        await _upgrade_serialized(engine)
    finally:
        await engine.dispose()


async def _upgrade_serialized(engine: AsyncEngine) -> None:
    head = head_revision()
    # The common case (every start after the first) needs no lock at all.
    if await current_revision(engine) == head:
        return
    async with _process_lock():
        backend = engine.dialect.name
        if backend == "sqlite":
            engine = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        async with engine.begin() as connection:
            if backend == "postgresql":
                # Released when this transaction ends; PostgreSQL DDL is transactional, so a
                # waiting process then sees the finished schema and Alembic does nothing.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            await connection.run_sync(_run_upgrade)


def _process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _run_upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
