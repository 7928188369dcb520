"""Which failures are transient: a dependency restarting, not a bug or a bad request.

A database or Redis restart surfaces as one of a dozen exception types from asyncpg, SQLAlchemy,
redis-py or the socket layer. Servers answer them with `UNAVAILABLE` (not `INTERNAL`), which callers
retry; the job manager retries its own writes on them. Which failed gRPC calls may be sent again
(`is_retryable_rpc_error`) is decided here too. Kept in one place so all of them agree.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Collection

import grpc

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
"""Codes any call may be retried on: the request was not (fully) served and may be sent again."""

IDEMPOTENT_RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""Codes a call that is safe to repeat (a read, or one carrying a `request_id`) may be retried on."""

_KEEPALIVE_REFUSAL_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# gRPC core words the server's GOAWAY (ENHANCE_YOUR_CALM, debug data "too_many_pings") both ways.
_KEEPALIVE_REFUSAL_TEXTS = ("too many pings", "too_many_pings")


def is_keepalive_refusal(error: grpc.RpcError) -> bool:
    """Whether a call failed because the server closed the connection over the client's keepalive
    pings. Every call on that connection fails with it, whatever it was doing, and a new connection
    serves the call again: a transport event, not an answer. It arrives as UNAVAILABLE or, depending
    on timing, as RESOURCE_EXHAUSTED, which otherwise means a real limit (a budget), hence the text."""
    if error.code() not in _KEEPALIVE_REFUSAL_CODES:
        return False
    debug = getattr(error, "debug_error_string", None)
    text = f"{error.details() or ''} {debug() if callable(debug) else ''}".lower()
    return any(marker in text for marker in _KEEPALIVE_REFUSAL_TEXTS)


def is_retryable_rpc_error(
    error: grpc.RpcError, codes: Collection[grpc.StatusCode] = RETRYABLE_CODES
) -> bool:
    """Whether a failed call may be sent again: its code is one of `codes` (`RETRYABLE_CODES`, or
    `IDEMPOTENT_RETRYABLE_CODES` for a call safe to repeat), or the server refused the keepalive."""
    return error.code() in codes or is_keepalive_refusal(error)


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError]
    try:
        import asyncpg

        types += [
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.AdminShutdownError,
            asyncpg.exceptions.CrashShutdownError,
            asyncpg.exceptions.TooManyConnectionsError,
            asyncpg.exceptions.ConnectionDoesNotExistError,
        ]
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        pass
    try:
        import redis.exceptions

        types += [
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.BusyLoadingError,
        ]
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    return tuple(types)


_TRANSIENT = _transient_types()
_TRANSIENT_MESSAGES = (
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "terminating connection due to administrator command",
    "connection was closed in the middle of operation",
    "connection is closed",
    "database is locked",
    "connection refused",
)


def is_transient(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is a dependency being briefly unreachable."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _TRANSIENT):
            return True
        # SQLAlchemy wraps driver errors; a connection it found broken is flagged as such.
        if getattr(current, "connection_invalidated", False):
            return True
        if isinstance(current, sqlite3.OperationalError | OSError) or type(current).__name__ in (
            "OperationalError",
            "InterfaceError",
            "DBAPIError",
        ):
            text = str(current).lower()
            if any(message in text for message in _TRANSIENT_MESSAGES):
                return True
        current = current.__cause__ or current.__context__
    return False


class Backoff:
    """Exponential backoff with jitter within a time budget, for retrying through a restart."""

    def __init__(self, budget_seconds: float, *, initial: float = 0.05, maximum: float = 2.0) -> None:
        self._give_up_at = time.monotonic() + budget_seconds
        self._next = initial
        self._maximum = maximum

    def next_delay(self) -> float | None:
        """How long to wait before the next try (jittered), or None once the budget is spent."""
        if time.monotonic() + self._next > self._give_up_at:
            return None
        delay = random.uniform(self._next / 2, self._next)
        self._next = min(self._next * 2, self._maximum)
        return delay


__all__ = [
    "IDEMPOTENT_RETRYABLE_CODES",
    "RETRYABLE_CODES",
    "Backoff",
    "is_keepalive_refusal",
    "is_retryable_rpc_error",
    "is_transient",
]
