"""Connecting to Redis, and keeping passwords out of URLs that get logged."""

from __future__ import annotations

import time

import pytest

from cohort.platform.errors import Unavailable
from cohort.platform.redis_client import connect_redis
from cohort.platform.urls import redact_url


@pytest.mark.redis
async def test_connect_redis_pings_the_test_server(redis_url):
    client = await connect_redis(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_unreachable_redis_fails_fast_naming_the_host():
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await connect_redis("redis://:hunter2@127.0.0.1:1/0", connect_timeout=2)
    assert time.monotonic() - started < 3
    assert "127.0.0.1:1" in info.value.message
    assert "hunter2" not in info.value.message
    assert "hunter2" not in str(info.value.metadata)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://user:s3cret@cache:6379/0", "redis://user:***@cache:6379/0"),
        (
            "rediss://cache:6380/1?password=s3cret&ssl_cert_reqs=none",
            "rediss://cache:6380/1?password=***&ssl_cert_reqs=none",
        ),
        (
            "postgresql+asyncpg://cohort:p%40ss@db:5432/cohort",
            "postgresql+asyncpg://cohort:***@db:5432/cohort",
        ),
        ("postgresql://cohort@db/cohort", "postgresql://cohort@db/cohort"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite+aiosqlite:///var/cohort.db", "sqlite+aiosqlite:///var/cohort.db"),
    ],
)
def test_redact_url_hides_passwords_only(url, expected):
    assert redact_url(url) == expected
