"""`SqliteWriter`: whole transactions on its own connection, sharing the file with the engine."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from cohort.platform.storage import open_database, write_transaction


@pytest.fixture
async def database(tmp_path):
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'cohort.db'}")
    async with db.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"))
    yield db
    await db.close()


async def _bodies(db) -> list[str]:
    async with db.sessions() as session:
        return list((await session.execute(text("SELECT body FROM notes ORDER BY id"))).scalars())


def _insert(connection: sqlite3.Connection, *bodies: str) -> int:
    connection.executemany("INSERT INTO notes (body) VALUES (?)", [(body,) for body in bodies])
    return len(bodies)


async def test_a_transaction_commits_and_the_engine_sees_it(database):
    assert await database.sqlite_writer.run(_insert, "a", "b") == 2
    assert await _bodies(database) == ["a", "b"]


async def test_a_failing_transaction_writes_nothing_and_the_writer_goes_on(database):
    def half_then_fail(connection: sqlite3.Connection) -> None:
        _insert(connection, "kept only if committed")
        connection.execute("INSERT INTO notes (body) VALUES (NULL)")  # NOT NULL: fails

    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        await database.sqlite_writer.run(half_then_fail)
    assert await _bodies(database) == []
    await database.sqlite_writer.run(_insert, "after")
    assert await _bodies(database) == ["after"]


async def test_it_waits_for_the_write_lock_an_engine_transaction_holds(database):
    async with write_transaction(database.sessions) as session:
        await session.execute(text("INSERT INTO notes (body) VALUES ('first')"))
        waiting = asyncio.ensure_future(database.sqlite_writer.run(_insert, "second"))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # BEGIN IMMEDIATE is waiting out the busy timeout
    await asyncio.wait_for(waiting, 5)
    assert await _bodies(database) == ["first", "second"]


async def test_a_cancelled_caller_does_not_cancel_its_transaction(database):
    def slow_insert(connection: sqlite3.Connection) -> None:
        connection.execute("SELECT 1")
        _insert(connection, "stored anyway")

    call = asyncio.ensure_future(database.sqlite_writer.run(slow_insert))
    await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await database.sqlite_writer.run(_insert, "next")  # queued behind it: the first has finished
    assert await _bodies(database) == ["stored anyway", "next"]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite+aiosqlite:///:memory:"])
async def test_an_in_memory_url_is_one_temporary_database_for_every_connection(url):
    db = await open_database(url)
    path = Path(db.engine.url.database)
    try:
        async with db.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"))
        await db.sqlite_writer.run(_insert, "shared")
        assert await _bodies(db) == ["shared"]
        assert path.exists()  # noqa: ASYNC240 - a test
    finally:
        await db.close()
    assert not path.parent.exists()  # noqa: ASYNC240 - removed by close


async def test_closing_twice_is_harmless_and_a_closed_writer_says_so(tmp_path):
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'cohort.db'}")
    writer = db.sqlite_writer
    await db.close()
    await db.close()
    with pytest.raises(RuntimeError, match="closed"):
        await writer.run(_insert, "too late")
