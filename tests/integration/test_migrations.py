"""Schema migrations and engines on a fresh SQLite file and on the PostgreSQL test database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, inspect, text

from cohort.platform.config import Settings
from cohort.platform.storage import (
    create_engine,
    current_revision,
    head_revision,
    open_database,
    upgrade_to_head,
    write_transaction,
)
from cohort.platform.storage.engine import session_factory
from cohort.platform.storage.migrate import alembic_config
from cohort.platform.storage.schema import Base, include_object

TABLES = {"tenants", "api_keys", "alembic_version"}


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def table_names(engine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def schema_differences(engine) -> list:
    def compare(connection):
        return compare_metadata(
            MigrationContext.configure(
                connection, opts={"compare_type": True, "include_object": include_object}
            ),
            Base.metadata,
        )

    async with engine.connect() as connection:
        return await connection.run_sync(compare)


@pytest.fixture
async def pg_schema(postgres_url):
    """A fresh schema in the PostgreSQL test database, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(postgres_url)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield schema
    async with admin.begin() as connection:
        await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.dispose()


def test_revisions_form_one_chain_ending_at_the_newest_file():
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1, "branched migrations: merge them"
    chain = [revision.revision for revision in scripts.walk_revisions()]
    assert chain[-1] == "0001"
    files = sorted(p.name.split("_")[0] for p in Path(scripts.versions).glob("[0-9]*.py"))
    assert head_revision() == files[-1] == chain[0]


async def test_sqlite_fresh_upgrade_creates_tables_at_head(tmp_path):
    engine = create_engine(sqlite_url(tmp_path / "cohort.db"))
    try:
        assert await current_revision(engine) is None
        await upgrade_to_head(engine)
        assert TABLES <= await table_names(engine)
        assert await current_revision(engine) == head_revision()
        assert await schema_differences(engine) == []
    finally:
        await engine.dispose()


async def test_sqlite_upgrade_twice_is_a_no_op(tmp_path):
    url = sqlite_url(tmp_path / "cohort.db")
    await upgrade_to_head(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO tenants (id, display_name, created_at) VALUES ('t', 'T', '2025-01-01')")
            )
        await upgrade_to_head(url)
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
            tenants = (await connection.execute(text("SELECT id FROM tenants"))).all()
        assert versions == [(head_revision(),)]
        assert tenants == [("t",)]
    finally:
        await engine.dispose()


async def test_sqlite_concurrent_upgrades_in_one_process_all_succeed(tmp_path):
    url = sqlite_url(tmp_path / "fresh.db")
    engines = [create_engine(url) for _ in range(8)]
    try:
        await asyncio.gather(*(upgrade_to_head(engine) for engine in engines))
        for engine in engines:
            assert await current_revision(engine) == head_revision()
    finally:
        for engine in engines:
            await engine.dispose()


def test_sqlite_concurrent_upgrades_across_processes_all_succeed(tmp_path):
    url = sqlite_url(tmp_path / "shared.db")
    script = (
        "import asyncio, sys\n"
        "from cohort.platform.storage import upgrade_to_head\n"
        "asyncio.run(upgrade_to_head(sys.argv[1]))"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr

    async def revision():
        engine = create_engine(url)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(revision()) == head_revision()


async def test_sqlite_downgrade_to_base_and_back(tmp_path):
    engine = create_engine(sqlite_url(tmp_path / "cohort.db"))

    def downgrade(connection):
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    try:
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            await connection.run_sync(downgrade)
        assert await table_names(engine) == {"alembic_version"}
        assert await current_revision(engine) is None
        await upgrade_to_head(engine)
        assert TABLES <= await table_names(engine)
    finally:
        await engine.dispose()


async def test_sqlite_connections_get_wal_and_safety_pragmas(tmp_path):
    path = tmp_path / "nested" / "dir" / "cohort.db"
    engine = create_engine(sqlite_url(path))
    try:
        assert path.parent.is_dir()
        async with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):

                async def pragma(name, connection=connection):
                    return (await connection.execute(text(f"PRAGMA {name}"))).scalar()

                assert await pragma("journal_mode") == "wal"
                assert await pragma("foreign_keys") == 1
                assert await pragma("busy_timeout") == 5000
                assert await pragma("synchronous") == 1  # NORMAL
    finally:
        await engine.dispose()


async def test_sqlite_enforces_foreign_keys(tmp_path):
    database = await open_database(sqlite_url(tmp_path / "cohort.db"))
    try:
        with pytest.raises(Exception, match="FOREIGN KEY"):
            async with database.engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO api_keys (id, tenant_id, name, secret_hash, created_at)"
                        " VALUES ('key_1', 'nobody', 'n', 'h', '2025-01-01')"
                    )
                )
    finally:
        await database.close()


async def test_write_transaction_takes_the_sqlite_write_lock_up_front(tmp_path):
    engine = create_engine(sqlite_url(tmp_path / "cohort.db"))
    statements: list[str] = []
    event.listen(
        engine.sync_engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql)
    )
    try:
        sessions = session_factory(engine)
        async with write_transaction(sessions) as session:
            await session.execute(text("SELECT 1"))
        async with sessions() as session:
            await session.execute(text("SELECT 2"))
        assert statements[statements.index("SELECT 1") - 1] == "BEGIN IMMEDIATE"
        assert statements[statements.index("SELECT 2") - 1] == "BEGIN DEFERRED"
    finally:
        await engine.dispose()


async def test_open_database_from_settings_uses_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path / "var")
    database = await open_database(settings)
    try:
        assert database.is_sqlite
        assert (tmp_path / "var" / "cohort.db").is_file()
        assert await current_revision(database.engine) == head_revision()
    finally:
        await database.close()


async def test_open_database_without_migrate_leaves_the_schema_alone(tmp_path):
    database = await open_database(sqlite_url(tmp_path / "cohort.db"), migrate=False)
    try:
        assert await table_names(database.engine) == set()
    finally:
        await database.close()


def test_schema_option_is_postgresql_only(tmp_path):
    with pytest.raises(ValueError, match="PostgreSQL"):
        create_engine(sqlite_url(tmp_path / "x.db"), schema="other")


@pytest.mark.postgres
async def test_postgres_fresh_upgrade_lands_in_the_schema(postgres_url, pg_schema):
    engine = create_engine(postgres_url, schema=pg_schema)
    try:
        assert await current_revision(engine) is None
        await upgrade_to_head(engine)
        assert await current_revision(engine) == head_revision()
        assert await schema_differences(engine) == []
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :schema"),
                {"schema": pg_schema},
            )
            assert TABLES <= {name for (name,) in rows}
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_upgrade_twice_is_a_no_op(postgres_url, pg_schema):
    engine = create_engine(postgres_url, schema=pg_schema)
    try:
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO tenants (id, display_name, created_at) VALUES ('t', 'T', now())")
            )
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM alembic_version"))).scalar() == 1
            assert (await connection.execute(text("SELECT id FROM tenants"))).all() == [("t",)]
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_concurrent_upgrades_all_succeed(postgres_url, pg_schema):
    engines = [create_engine(postgres_url, schema=pg_schema) for _ in range(3)]
    try:
        await asyncio.gather(*(upgrade_to_head(engine) for engine in engines))
        assert await current_revision(engines[0]) == head_revision()
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.mark.postgres
async def test_open_database_honours_the_configured_schema(postgres_url, pg_schema):
    database = await open_database(Settings(database_url=postgres_url, database_schema=pg_schema))
    try:
        async with database.engine.connect() as connection:
            assert (await connection.execute(text("SELECT current_schema()"))).scalar() == pg_schema
            assert (await connection.execute(text("SELECT count(*) FROM tenants"))).scalar() == 0
    finally:
        await database.close()
