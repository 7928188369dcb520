"""The event loop Cohort's processes run on: uvloop where it is installed, else asyncio's own.

uvloop (libuv under asyncio's API) makes each socket read, write and callback cheaper; on a gRPC
or HTTP call that is a good part of the Python-side cost. `COHORT_EVENT_LOOP=asyncio` chooses the
standard loop (to rule the loop out when debugging).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

EVENT_LOOP_VARIABLE = "COHORT_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default (not installed, or not wanted)."""
    if os.environ.get(EVENT_LOOP_VARIABLE, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_event_loop(main: Awaitable[T]) -> T:
    """`asyncio.run(main)` on the loop `loop_factory` chooses."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)  # type: ignore[arg-type]


def loop_name() -> str:
    factory = loop_factory()
    return "asyncio" if factory is None else "uvloop"


__all__ = ["EVENT_LOOP_VARIABLE", "loop_factory", "loop_name", "run_event_loop"]
