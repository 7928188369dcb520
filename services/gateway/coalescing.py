"""Identical concurrent reads through the gateway share one backend call, without reading stale data.

Two hundred dashboards polling the status of one job send the same `GetJob` with the same
credentials many times a millisecond; each gRPC call costs the gateway about as much CPU as the rest
of the request. `CoalescedRead` wraps the unary callable of an RPC bound to HTTP GET (side-effect free
by the API conventions) and lets requests with the same (request, metadata, timeout) share a call.

A request never joins a call already running: that call may have read the state before the request
arrived (before a cancel its caller has just seen succeed, say). It joins the key's *pending* call,
which starts at the end of the event-loop turn or, while `max_in_flight` calls of the key run (one by
default), when one of them ends. Every answer was thus read after its request arrived, as an
unshared call's would be. Under load the calls of one key run back to back, each answering all who
came while the previous one ran; an idle gateway adds no wait. Different credentials, tenants,
`X-Request-Id`s or deadlines never share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message

Metadata = tuple[tuple[str, str], ...]
_Key = tuple[bytes, Metadata, float | None]


class _Flight:
    """One backend call of a key and the requests waiting on it; `answer` is set when it ends."""

    __slots__ = ("answer",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answer: asyncio.Future = loop.create_future()
        self.answer.add_done_callback(_retrieve)


class _KeyState:
    __slots__ = ("pending", "running")

    def __init__(self) -> None:
        self.pending: _Flight | None = None
        self.running = 0


class CoalescedRead:
    """A drop-in for a unary-unary multi-callable: `call = read(request, metadata=..., timeout=...)`,
    then `await call` and `await call.trailing_metadata()` (those of the shared call)."""

    def __init__(self, call: Callable[..., Any], max_in_flight: int = 1) -> None:
        self._call = call
        self._max_in_flight = max_in_flight
        self._keys: dict[_Key, _KeyState] = {}

    def __call__(
        self, request: Message, *, metadata: Metadata = (), timeout: float | None = None
    ) -> CoalescedCall:
        return CoalescedCall(self._answer(request, metadata, timeout))

    async def _answer(
        self, request: Message, metadata: Metadata, deadline: float | None
    ) -> tuple[Message, Any]:
        key = (request.SerializeToString(deterministic=True), metadata, deadline)
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState()
        flight = state.pending
        if flight is None:
            loop = asyncio.get_running_loop()
            flight = state.pending = _Flight(loop)
            if state.running < self._max_in_flight:
                # Started at the end of this loop turn: requests read in the same turn join it.
                loop.call_soon(self._start, key, state, request, metadata, deadline)
        if deadline is None:
            return await asyncio.shield(flight.answer)
        # A request that waited for a call to start still answers within its own deadline.
        try:
            return await asyncio.wait_for(asyncio.shield(flight.answer), deadline)
        except TimeoutError:
            raise _deadline_exceeded() from None

    def _start(
        self, key: _Key, state: _KeyState, request: Message, metadata: Metadata, deadline: float | None
    ) -> None:
        flight = state.pending
        if flight is None or state.running >= self._max_in_flight:
            return  # started already, or to be started when a running call ends
        state.pending = None
        state.running += 1
        task = asyncio.ensure_future(self._invoke(request, metadata, deadline))
        task.add_done_callback(
            lambda done: self._finished(key, state, flight, done, request, metadata, deadline)
        )

    def _finished(
        self,
        key: _Key,
        state: _KeyState,
        flight: _Flight,
        done: asyncio.Future,
        request: Message,
        metadata: Metadata,
        deadline: float | None,
    ) -> None:
        state.running -= 1
        _copy(done, flight.answer)
        if state.pending is not None:
            self._start(key, state, request, metadata, deadline)
        elif state.running == 0:
            del self._keys[key]

    async def _invoke(
        self, request: Message, metadata: Metadata, deadline: float | None
    ) -> tuple[Message, Any]:
        call = self._call(request, metadata=metadata, timeout=deadline)
        response = await call
        return response, await call.trailing_metadata()


class CoalescedCall:
    """What `CoalescedRead` returns: awaitable like a `grpc.aio.UnaryUnaryCall`, with its trailers."""

    __slots__ = ("_answer", "_trailing")

    def __init__(self, answer: Coroutine[Any, Any, tuple[Message, Any]]) -> None:
        self._answer = answer
        self._trailing = None

    def __await__(self) -> Generator[Any, None, Message]:
        response, self._trailing = yield from self._answer.__await__()
        return response

    async def trailing_metadata(self) -> Any:
        return self._trailing


def _copy(source: asyncio.Future, target: asyncio.Future) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


def _retrieve(future: asyncio.Future) -> None:
    """Marks a shared failure as seen: every waiter may have gone (their connections closed)."""
    if not future.cancelled():
        future.exception()


def _deadline_exceeded() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="Deadline Exceeded",
    )
