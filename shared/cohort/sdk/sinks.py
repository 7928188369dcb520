"""Where finished trajectories go: a local Trae file (`FileSink`) and the collector (`CollectorSink`).

`CollectorSink` never blocks the agent: `submit` only queues, and a background asyncio task sends
batches with one `IngestTrajectories` client stream each (up to `batch_size` trajectories, or
whatever is queued after `flush_interval` seconds). When a send fails (collector down, deadline,
per-item failure) the trajectory's local file is kept and a warning logged; nothing is retried, the
file can be ingested later. Call `await sink.aclose()` at shutdown to send what is queued.

`submit` from the thread running the sink's event loop queues directly; from another thread it hands
the item to that loop; with no running loop at all the item waits for the next `aflush`/`aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.sdk.journal import atomic_write_bytes, dump_document

log = logging.getLogger(__name__)


class FileSink:
    """Writes a recorded document as a Trae file, atomically (see `atomic_write_bytes`)."""

    def write(self, path: str | os.PathLike[str], document: Mapping[str, Any]) -> Path:
        return atomic_write_bytes(path, dump_document(document))


@dataclass
class _Item:
    trajectory: trajectory_pb2.Trajectory
    local_path: Path | None
    delete_local: bool


class CollectorSink:
    """Sends finished trajectories to the collector in batches from a background task.

    `channel_or_pool` is a `grpc.aio.Channel` to the collector or a `cohort.platform.rpc.client.ChannelPool`
    (its `collector` channel, with credentials and deadlines). Counters: `sent`, `failed`, `dropped`.
    """

    def __init__(
        self,
        channel_or_pool: Any,
        *,
        batch_size: int = 64,
        flush_interval: float = 0.5,
        rpc_timeout: float = 30.0,
        max_pending: int = 10_000,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._target = channel_or_pool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.rpc_timeout = rpc_timeout
        self.max_pending = max_pending
        self._stub: collector_pb2_grpc.CollectorServiceStub | None = None
        self._pending: deque[_Item] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._send_lock: asyncio.Lock | None = None
        self._thread_lock = threading.Lock()
        self._closing = False
        self.closed = False
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    # -- producer side (any thread, never blocks) -----------------------------------------------

    def submit(
        self,
        trajectory: trajectory_pb2.Trajectory,
        *,
        local_path: str | os.PathLike[str] | None = None,
        delete_local_on_success: bool = False,
    ) -> None:
        """Queues a finished trajectory; returns at once."""
        item = _Item(
            trajectory, Path(local_path) if local_path is not None else None, delete_local_on_success
        )
        if self._closing:
            log.warning(
                "collector sink closed; trajectory %s not sent%s", trajectory.trajectory_id, _kept(item)
            )
            self.dropped += 1
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop
        if running is not None and (loop is None or loop is running or loop.is_closed()):
            self._enqueue(item, running)
        elif loop is not None and loop.is_running() and not loop.is_closed():
            loop.call_soon_threadsafe(self._enqueue, item, loop)
        else:
            self._push(item)  # no loop: sent by the next aflush()/aclose()

    def _push(self, item: _Item) -> bool:
        with self._thread_lock:
            if len(self._pending) >= self.max_pending:
                log.warning(
                    "collector sink queue full (%d); trajectory %s not sent%s",
                    self.max_pending,
                    item.trajectory.trajectory_id,
                    _kept(item),
                )
                self.dropped += 1
                return False
            self._pending.append(item)
            return True

    def _enqueue(self, item: _Item, loop: asyncio.AbstractEventLoop) -> None:
        self._bind(loop)
        if self._push(item) and (len(self._pending) == 1 or len(self._pending) >= self.batch_size):
            assert self._wake is not None
            self._wake.set()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
            self._send_lock = asyncio.Lock()
            self._task = None
            self._stub = None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="cohort-collector-sink")

    # -- the background task --------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            while not self._pending and not self._closing:
                self._wake.clear()
                await self._wake.wait()
            if not self._pending:
                return
            if len(self._pending) < self.batch_size and not self._closing:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            await self._drain()

    async def _drain(self) -> None:
        assert self._send_lock is not None
        async with self._send_lock:
            while self._pending:
                with self._thread_lock:
                    batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
                await self._send(batch)

    def _collector_stub(self) -> collector_pb2_grpc.CollectorServiceStub:
        if self._stub is None:
            target = self._target
            channel = target.channel("collector") if hasattr(target, "channel") else target
            self._stub = collector_pb2_grpc.CollectorServiceStub(channel)
        return self._stub

    async def _send(self, batch: list[_Item]) -> None:
        requests = [collector_pb2.IngestTrajectoriesRequest(trajectory=item.trajectory) for item in batch]
        try:
            response = await self._collector_stub().IngestTrajectories(
                iter(requests), timeout=self.rpc_timeout
            )
        except asyncio.CancelledError:
            self.failed += len(batch)
            raise
        except Exception as exc:  # noqa: BLE001 - any failure: keep the files, log, carry on
            self.failed += len(batch)
            detail = (
                f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
            )
            kept = [str(item.local_path) for item in batch if item.local_path is not None]
            log.warning(
                "collector ingest failed (%s): %d trajectories not sent; local files kept: %s",
                detail,
                len(batch),
                ", ".join(kept) or "none",
            )
            return
        failures = {failure.index: failure for failure in response.failures}
        for index, item in enumerate(batch):
            failure = failures.get(index)
            if failure is not None:
                self.failed += 1
                log.warning(
                    "collector rejected trajectory %s (%s)%s",
                    item.trajectory.trajectory_id,
                    failure.status.message,
                    _kept(item),
                )
                continue
            self.sent += 1
            if item.delete_local and item.local_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    item.local_path.unlink()

    # -- flushing and closing ------------------------------------------------------------------

    async def aflush(self) -> None:
        """Sends everything queued now and waits for batches in flight."""
        self._bind_current()
        await self._drain()

    async def aclose(self) -> None:
        """Sends what is queued, then stops the background task; later `submit`s are not sent."""
        self._closing = True
        self._bind_current()
        assert self._wake is not None
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task
        await self._drain()
        self.closed = True

    def _bind_current(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
            self._send_lock = asyncio.Lock()
            self._task = None
            self._stub = None
        if self._wake is None:
            self._wake = asyncio.Event()
            self._send_lock = asyncio.Lock()


def _kept(item: _Item) -> str:
    return f"; kept at {item.local_path}" if item.local_path is not None else ""
