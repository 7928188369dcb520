"""Async database engines for the embedded default (SQLite) and production (PostgreSQL).

Processes open theirs with `cohort.platform.storage.open_database(settings)` once at start-up (it lives in
`migrate`, since it brings the schema to the latest migration before handing the `Database` back).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from cohort.platform.config import Settings
from cohort.platform.storage.sqlite_writer import SqliteWriter

SQLITE_BUSY_TIMEOUT_MS = 5000

Session = AsyncSession
"""A session in a transaction, as services see it: they pass the one `write_transaction` or
`idempotency.run_once` opened to their store's methods, and only a store runs statements on it."""
Sessions = async_sessionmaker[AsyncSession]
"""What a store is built on: the factory of sessions (a service passes it through without SQLAlchemy)."""

SQLITE_BEGIN_OPTION = "cohort_sqlite_begin"
"""Execution option choosing how a SQLite transaction starts: "DEFERRED" (default) or "IMMEDIATE".

`engine.execution_options(cohort_sqlite_begin="IMMEDIATE")` takes the database's write lock when the
transaction begins, waiting up to the busy timeout; use it for read-then-write transactions that
must not fail with "database is locked" when another connection wrote in between.
"""


def database_url(target: Settings | str | URL) -> URL:
    """The async SQLAlchemy URL for settings or a URL string, with the driver filled in."""
    url = make_url(target.effective_database_url if isinstance(target, Settings) else target)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    elif url.drivername == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return url


def is_sqlite(url: URL | str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(target: Settings | str | URL, *, schema: str | None = None) -> AsyncEngine:
    """An async engine for the configured database.

    SQLite gets WAL, `synchronous=NORMAL`, foreign keys and a busy timeout on every connection;
    PostgreSQL gets a pool that pre-pings, so connections killed by a failover are replaced rather
    than failing a request. `schema` (PostgreSQL only) sets the connection's `search_path`, so
    tables and Alembic's version table live in that schema (one schema per test, or per deployment
    sharing a database); it defaults to `Settings.database_schema`.
    """
    url = database_url(target)
    if schema is None and isinstance(target, Settings):
        schema = target.database_schema
    if is_sqlite(url):
        if schema is not None:
            raise ValueError("a database schema is only supported on PostgreSQL, not SQLite")
        return _create_sqlite_engine(url)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"unsupported database {url.get_backend_name()!r}: use sqlite or postgresql")
    connect_args: dict[str, Any] = {"server_settings": {"application_name": "cohort"}}
    if schema is not None:
        connect_args["server_settings"]["search_path"] = schema
    return _create_async_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _switch_to_wal(dbapi_connection: Any, cursor: Any) -> None:
    """`PRAGMA journal_mode=WAL`, retried while the file is "locked": connections opening a fresh
    file at the same moment can get that answer at once, without SQLite's busy handler waiting."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as error:
            if "locked" not in str(error) or time.monotonic() + delay > deadline:
                raise
        # In the connection's greenlet: an asyncio sleep, so the event loop is not blocked.
        dbapi_connection.run_async(lambda _connection, delay=delay: asyncio.sleep(delay))
        delay = min(delay * 2, 0.1)


_temporary_databases: dict[str, weakref.finalize] = {}
"""The file of each in-memory URL's engine -> what removes it (at `Database.close`, else at exit)."""


def _create_sqlite_engine(url: URL) -> AsyncEngine:
    database = url.database or ""
    temporary = None
    if database in ("", ":memory:") or "mode=memory" in str(url.query):
        # A true in-memory database is private to one connection; a temporary file is one database
        # for every connection (the engine's pool and the `SqliteWriter`), removed with the engine.
        temporary = tempfile.mkdtemp(prefix="cohort-sqlite-")
        url = url.set(database=str(Path(temporary) / "cohort.db"), query={})
    elif not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = _create_async_engine(url)
    if temporary is not None:
        _temporary_databases[url.database] = weakref.finalize(engine, shutil.rmtree, temporary, True)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take transaction control from the sqlite3 module (which never BEGINs before DDL and has
        # no IMMEDIATE mode) so SQLAlchemy's "begin" hook below starts every transaction itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # The busy timeout first: switching a fresh file to WAL needs a lock another
            # connection opening at the same moment may hold.
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _switch_to_wal(dbapi_connection, cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"{SQLITE_BEGIN_OPTION} must be DEFERRED, IMMEDIATE or EXCLUSIVE, not {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after commit without lazy loads, which an
    # async session cannot do implicitly.
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def write_transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that will write, committed on success, rolled back on error.

    On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`, waiting out the busy timeout),
    so a read-then-write cannot fail halfway with "database is locked" because another connection
    wrote in between; on PostgreSQL it is plain `sessions.begin()`.
    """
    async with sessions.begin() as session:
        await session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        yield session


@dataclass
class Database:
    """An engine and its session factory, closed together; on SQLite also the `SqliteWriter` that
    hot write paths use for a whole transaction in one hop."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession] = field(init=False)
    sqlite_writer: SqliteWriter | None = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = session_factory(self.engine)
        self.sqlite_writer = (
            SqliteWriter(_sqlite_target(self.engine.url), busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS)
            if self.is_sqlite
            else None
        )

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine.url)

    async def close(self) -> None:
        if self.sqlite_writer is not None:
            await self.sqlite_writer.close()
        await self.engine.dispose()
        remove = _temporary_databases.pop(self.engine.url.database or "", None)
        if remove is not None:
            remove()


def _sqlite_target(url: URL) -> str:
    """What `sqlite3.connect` opens for a SQLite URL: its path, or a `file:` URI with its parameters."""
    database = url.database or ""
    if not database.startswith("file:"):
        return database
    parameters = "&".join(f"{key}={value}" for key, value in url.query.items() if key != "uri")
    return f"{database}?{parameters}" if parameters else database
