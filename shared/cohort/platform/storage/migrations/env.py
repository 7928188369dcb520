"""Alembic environment for Cohort: SQLite (batch mode) and PostgreSQL, both through async engines.

`cohort.platform.storage.migrate.upgrade_to_head` hands over an open connection in
`config.attributes["connection"]`; without one (a developer running `alembic.command` with
`alembic_config(url)`), this builds its own engine from the URL.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from cohort.platform.storage.engine import create_engine
from cohort.platform.storage.schema import Base, include_object

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata, compare_type=True, include_object=include_object, **kwargs
    )


def do_run_migrations(connection: Connection) -> None:
    # SQLite cannot ALTER most things; batch mode rewrites the table instead.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), schema=config.attributes.get("schema"))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    _configure(url=url, literal_binds=True, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
elif (connection := config.attributes.get("connection")) is not None:
    do_run_migrations(connection)
else:
    asyncio.run(run_async_migrations())
