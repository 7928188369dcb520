"""Connecting to Redis (production's work distribution and status fan-out)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cohort.platform.errors import Unavailable
from cohort.platform.urls import redact_url

__all__ = ["connect_redis", "redact_url"]


async def connect_redis(url: str, *, connect_timeout: float = 5.0) -> aioredis.Redis:
    """A Redis client for `url`, after one successful PING.

    Pinging at start-up turns a wrong URL or a server that is down into one clear `Unavailable`
    naming the (redacted) URL, instead of the first real command failing somewhere later.
    """
    client = aioredis.from_url(url, socket_connect_timeout=connect_timeout)
    try:
        # The client's own retries could stretch a dead server into many timeouts; bound the total.
        async with asyncio.timeout(connect_timeout):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        detail = str(exc) or type(exc).__name__
        raise Unavailable(
            f"Redis at {redact_url(url)} is unreachable: {detail}",
            metadata={"url": redact_url(url)},
        ) from exc
    return client
