"""Fan-out of job changes: to `WatchJob` streams and to the worker running the job.

`JobNotifier` delivers in-process; `RedisJobNotifier` also publishes every change on a Redis pub/sub
channel and delivers what it receives, so a watcher on any job-manager replica sees changes made on
any other, and the replica running a job hears of a pause or cancel requested elsewhere. Fan-out is
best effort: the jobs table is the truth, and watchers re-read it when idle (see `JobService.watch`),
so a lost message delays a snapshot, never loses it. Subscribers drop what is not newer than what
they already have, so a change delivered twice (locally, then back from Redis) counts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from cohort.api.jobs.v1 import jobs_pb2
from cohort.services.jobs.store import JobChange

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
"""How long a `WatchJob` stream stays silent before a heartbeat snapshot (read at call time)."""

SUBSCRIPTION_BUFFER = 256
"""Snapshots a slow watcher may fall behind by; beyond that the oldest are dropped (the newest, a
full snapshot, still says everything)."""

RECENT_SNAPSHOT_SECONDS = 1.0
"""How long `RecentSnapshots` trusts a snapshot after it arrived (fan-out is best effort)."""

RECENT_SNAPSHOT_ENTRIES = 20_000

_FLAG_PAUSE = 1
_FLAG_CANCEL = 2


def encode_change(change: JobChange) -> bytes:
    flags = (_FLAG_PAUSE if change.pause_requested else 0) | (_FLAG_CANCEL if change.cancel_requested else 0)
    return bytes([flags]) + change.job.SerializeToString()


def decode_change(data: bytes) -> JobChange:
    flags = data[0]
    return JobChange(
        jobs_pb2.Job.FromString(data[1:]),
        pause_requested=bool(flags & _FLAG_PAUSE),
        cancel_requested=bool(flags & _FLAG_CANCEL),
    )


class Subscription:
    """Changes of one job, in revision order, newer than the last one taken."""

    def __init__(self, notifier: JobNotifier, key: tuple[str, str]) -> None:
        self._notifier = notifier
        self.key = key
        self._pending: deque[jobs_pb2.Job] = deque(maxlen=SUBSCRIPTION_BUFFER)
        self._ready = asyncio.Event()
        self._newest = 0

    def offer(self, job: jobs_pb2.Job) -> None:
        if job.revision <= self._newest:
            return
        self._newest = job.revision
        self._pending.append(job)
        self._ready.set()

    async def next(self, wait_seconds: float) -> jobs_pb2.Job | None:
        """The next change, or None when none came within `wait_seconds`."""
        if not self._pending:
            self._ready.clear()
            try:
                async with asyncio.timeout(wait_seconds):
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self._pending.popleft()

    def close(self) -> None:
        self._notifier._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RecentSnapshots:
    """The newest snapshot of each job seen lately, from the notifier or a read of the table.

    `GetJob` of a running job, which changes every few hundred milliseconds, is served from here
    instead of a read that queues behind the progress writes of every other running job. A snapshot
    is trusted for `ttl_seconds` after it arrived and a newer revision always replaces an older one,
    so an answer is never older than the table was `ttl_seconds` ago, even if a fan-out message is lost.
    """

    def __init__(
        self, ttl_seconds: float = RECENT_SNAPSHOT_SECONDS, max_entries: int = RECENT_SNAPSHOT_ENTRIES
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[jobs_pb2.Job, float]] = OrderedDict()

    def offer(self, job: jobs_pb2.Job) -> None:
        key = (job.tenant_id, job.job_id)
        now = time.monotonic()
        held = self._entries.get(key)
        if held is not None and held[0].revision > job.revision:
            return
        self._entries[key] = (job, now + self._ttl)
        self._entries.move_to_end(key)
        # Oldest arrivals first: expired ones go, and the oldest when over the limit.
        while self._entries:
            oldest_key, (_, expires) = next(iter(self._entries.items()))
            if expires > now and len(self._entries) <= self._max:
                break
            del self._entries[oldest_key]

    def get(self, tenant_id: str, job_id: str) -> jobs_pb2.Job | None:
        held = self._entries.get((tenant_id, job_id))
        if held is None or held[1] <= time.monotonic():
            return None
        return held[0]


class JobNotifier:
    """In-process fan-out (the embedded default)."""

    def __init__(self) -> None:
        self._subscriptions: dict[tuple[str, str], set[Subscription]] = {}
        self._listeners: list[Callable[[JobChange], None]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def subscribe(self, tenant_id: str, job_id: str) -> Subscription:
        subscription = Subscription(self, (tenant_id, job_id))
        self._subscriptions.setdefault(subscription.key, set()).add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._subscriptions.get(subscription.key)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscriptions[subscription.key]

    def add_listener(self, listener: Callable[[JobChange], None]) -> None:
        """`listener` sees every change of every job (the scheduler uses it for pause and cancel)."""
        self._listeners.append(listener)

    def deliver(self, change: JobChange) -> None:
        for subscription in list(self._subscriptions.get(change.key, ())):
            subscription.offer(change.job)
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.exception("job change listener failed")

    async def publish(self, change: JobChange) -> None:
        self.deliver(change)

    async def publish_all(self, changes: list[JobChange]) -> None:
        for change in changes:
            await self.publish(change)


class RedisJobNotifier(JobNotifier):
    """Fan-out across job-manager replicas through Redis pub/sub on `channel`."""

    def __init__(self, redis, channel: str) -> None:
        super().__init__()
        self._redis = redis
        self._channel = channel
        self._reader: asyncio.Task | None = None
        self._pubsub = None

    async def start(self) -> None:
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self._channel)
        self._reader = asyncio.create_task(self._read(), name="jobs-notifier-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("job change fan-out: Redis read failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                change = decode_change(message["data"])
            except Exception:
                log.warning("job change fan-out: dropped a malformed message")
                continue
            self.deliver(change)

    async def publish(self, change: JobChange) -> None:
        self.deliver(change)
        try:
            await self._redis.publish(self._channel, encode_change(change))
        except Exception:
            # Watchers elsewhere catch up from the table when idle; the change itself is committed.
            log.warning("job change fan-out: Redis publish failed", exc_info=True)

    async def publish_all(self, changes: list[JobChange]) -> None:
        for change in changes:
            self.deliver(change)
        if not changes:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for change in changes:
                    pipe.publish(self._channel, encode_change(change))
                await pipe.execute()
        except Exception:
            log.warning("job change fan-out: Redis publish failed", exc_info=True)
