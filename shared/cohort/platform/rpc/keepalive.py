"""gRPC keepalive: the client's pings and the server's tolerance of them, both from one interval.

A long call (a `CollectGroup` stream, a `WatchJob`) can go minutes without a message, so clients
ping every `keepalive_seconds` to notice a dead peer. gRPC core's server counts a ping that comes
sooner than it allows as a strike and, past `grpc.http2.max_ping_strikes` (2), sends GOAWAY
ENHANCE_YOUR_CALM "too_many_pings", which fails every call on the connection. Both option lists
are derived here from the same setting so they cannot drift apart; every process of a deployment
should share `COHORT_GRPC_KEEPALIVE_SECONDS`, though a server also accepts clients configured up to
`SERVER_PING_TOLERANCE` times faster than itself.
"""

from __future__ import annotations

PING_ACK_TIMEOUT_MS = 10_000
"""How long a client waits for a ping's acknowledgement before it drops the connection: a property of
the network and of how busy the peer may be, not of how often it pings."""

SERVER_PING_TOLERANCE = 3
"""The server accepts pings this many times more often than its own interval, so timer jitter on a
busy host, or a peer whose interval is a little shorter, is never a strike."""

_GRPC_MAX_MS = 2**31 - 1  # gRPC reads these options as C ints


def _milliseconds(seconds: float) -> int:
    return max(1, min(_GRPC_MAX_MS, round(seconds * 1000)))


def client_options(keepalive_seconds: float) -> list[tuple[str, int]]:
    """Channel options: ping every `keepalive_seconds` while a call is open."""
    return [
        ("grpc.keepalive_time_ms", _milliseconds(keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", PING_ACK_TIMEOUT_MS),
        # A quiet stream sends no data for minutes; gRPC's default (2 pings, then none until data)
        # would stop watching the peer just when a long call needs it.
        ("grpc.http2.max_pings_without_data", 0),
        # An idle channel has no call to lose: a dead connection is found by the next call, which
        # is retried on UNAVAILABLE.
        ("grpc.keepalive_permit_without_calls", 0),
    ]


def server_options(keepalive_seconds: float) -> list[tuple[str, int]]:
    """Server options: accept the pings `client_options` sends, also when they race a call's end."""
    return [
        # gRPC's name for GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS. An unknown name is
        # ignored silently, and the default it then leaves in force (5 min) refuses a 30 s client.
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            _milliseconds(keepalive_seconds / SERVER_PING_TOLERANCE),
        ),
        # Without it a ping arriving when no call is open must be 2 h after the previous one: a ping
        # sent during a call that ends before the ping is read would be a strike.
        ("grpc.keepalive_permit_without_calls", 1),
    ]
