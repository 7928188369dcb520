"""Aware datetimes (what the database holds) as protobuf `Timestamp`s (what the API sends)."""

from __future__ import annotations

from datetime import datetime
from typing import overload

from google.protobuf.timestamp_pb2 import Timestamp


@overload
def to_timestamp(moment: datetime) -> Timestamp: ...
@overload
def to_timestamp(moment: None) -> None: ...
def to_timestamp(moment: datetime | None) -> Timestamp | None:
    """None stays None, so an optional time (a key never used, a job not started) stays unset when
    passed to a message's constructor."""
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
