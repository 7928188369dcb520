"""Whole SQLite write transactions in one hop off the event loop.

Through SQLAlchemy's async engine every statement is a round trip between the event loop and
aiosqlite's thread, plus SQLAlchemy's own work per statement: storing one trajectory (a transaction
of six statements) cost ~1.2 ms of CPU, most of it fixed per transaction. A hot write path instead
hands `SqliteWriter.run` a plain function of a `sqlite3.Connection`; it runs on the writer's own
thread and connection between `BEGIN IMMEDIATE` and `COMMIT` (`ROLLBACK` if it raises), ~0.2 ms for
the same transaction. The connection has the engine's settings (busy timeout, `synchronous=NORMAL`,
foreign keys; the file is already in WAL mode), so it takes turns for the write lock with the
engine's connections and with other processes exactly as they do with each other.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

Result = TypeVar("Result")


class SqliteWriter:
    """One synchronous connection to a SQLite file, used only from its one thread."""

    def __init__(self, database: str, *, busy_timeout_ms: int) -> None:
        self._database = database
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cohort-sqlite-writer")
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    async def run(self, work: Callable[..., Result], *args: Any) -> Result:
        """`work(connection, *args)` in a write transaction of its own, committed if it returns.

        A caller cancelled while it runs does not stop it: the transaction commits or rolls back
        as if the caller had waited.
        """
        if self._closed:
            raise RuntimeError("the SQLite writer is closed (its database was closed)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, work, args)

    def _transaction(self, work: Callable[..., Result], args: tuple) -> Result:
        connection = self._connection or self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(connection, *args)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return result

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit BEGINs from the sqlite3 module; `_transaction` owns them.
        connection = sqlite3.connect(
            self._database, isolation_level=None, uri=self._database.startswith("file:")
        )
        connection.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        self._connection = connection
        return connection

    async def close(self) -> None:
        """Closes the connection once the transactions already handed to it have run; idempotent."""
        if self._closed:
            return
        self._closed = True

        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close_connection)
        self._executor.shutdown(wait=False)
