"""Shared fixtures: the real PostgreSQL and Redis test servers, when the environment names them.

`COHORT_TEST_DATABASE_URL` and `COHORT_TEST_REDIS_URL` point at them (`.ci/run` exports both). When
a URL is unset the tests that need it are skipped with the reason; when `COHORT_REQUIRE_SERVICES=1`
(as in CI) a missing or unreachable server fails them instead, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import uuid

import pytest

from cohort.platform.config import Settings

REQUIRE_SERVICES = os.environ.get("COHORT_REQUIRE_SERVICES", "") in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (COHORT_REQUIRE_SERVICES=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """An asyncpg URL of an empty-able PostgreSQL database reserved for tests."""
    url = os.environ.get("COHORT_TEST_DATABASE_URL", "").strip()
    if not url:
        _unavailable("COHORT_TEST_DATABASE_URL is not set: no PostgreSQL test database")
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("COHORT_TEST_REDIS_URL", "").strip()
    if not url:
        _unavailable("COHORT_TEST_REDIS_URL is not set: no Redis test server")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
async def database_settings(request, tmp_path):
    """Settings on a fresh SQLite data directory, and on a fresh schema of the PostgreSQL test database."""
    base = Settings(data_dir=tmp_path / "var", auth_cache_seconds=0.0)
    if request.param == "sqlite":
        yield base
        return
    import asyncpg

    url = request.getfixturevalue("postgres_url")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    await connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield base.with_overrides(database_url=url, database_schema=schema)
    finally:
        await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await connection.close()


@pytest.fixture
async def start_suite_for():
    """`await start_suite_for(settings, components, job_runner=None)`: a suite on ephemeral ports,
    stopped (in the order started) when the test ends. `job_runner(context)`: what runs its jobs
    instead of real training."""
    from cohort.services.suite import start_suite

    started = []

    async def start(settings: Settings, components: list[str], *, job_runner=None):
        suite = await start_suite(settings, components, ephemeral_ports=True, job_runner=job_runner)
        started.append(suite)
        return suite

    yield start
    for suite in started:
        await suite.stop(0)
