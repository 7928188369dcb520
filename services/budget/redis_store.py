"""Production check-and-hold: Lua scripts on Redis in front of the PostgreSQL ledger.

A reservation is checked against the limits and held by one Lua script (atomic on the Redis
server, however many replicas of the budget service run); then it is written to the PostgreSQL
ledger (`BudgetLedger`), which stays the truth. Commit and release are written to the ledger first
and then applied to Redis ("settled"). Redis is rebuilt from the ledger when a process first uses
it, whenever it finds a tenant's keys missing (Redis restarted or was flushed), and then every
`reconcile_seconds` per tenant.

Keys of one tenant share a hash tag (`cohort:budget[:<database schema>]:{<tenant>}:…`), so every
script touches one Redis Cluster slot; the schema keeps deployments that share a Redis apart:

- `holds`: reservation id -> JSON {month, job, amount, expire, create} of each active hold
- `expiry`: sorted set of the holds by expiry (ms); due holds are dropped before each check
- `spent` / `reserved`: `m:<YYYY-MM>` and `j:<job id>` -> micro-USD
- `limits`: `tenant` (present = loaded from the ledger) and `j:<job id>` -> limit, 0 = none
- `settled`: reservation id -> JSON {at, month, job, actual} of every commit or release applied,
  kept for `SETTLED_RETENTION`, so applying one twice (a repeat, a retry) changes nothing

Races with a rebuild are covered by two rules: a hold in Redis that the ledger does not have yet is
kept when it is younger than `grace_seconds` (its ledger write is in flight), and a settle applied
after the ledger snapshot was read is added back on top of it. What remains is conservative: a
settle that lags its ledger write by more than the grace can be counted twice until the next
rebuild (more counted as spent, never less).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from redis.exceptions import RedisError

from cohort.platform.errors import Unavailable
from cohort.platform.redis_client import connect_redis
from cohort.services.budget.store import (
    BudgetLedger,
    Reservation,
    Scope,
    exhausted,
)

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 32

SETTLED_RETENTION = timedelta(days=9)
"""Longer than any reservation lives (7 days) plus the service's re-settle window (8 days)."""

_HOLD = """
local holds, expiry, spent, reserved, limits = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, month, job = ARGV[1], ARGV[2], ARGV[3]
local amount, expire, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])
if redis.call('HEXISTS', limits, 'tenant') == 0 then return {'LOAD'} end
for _, due in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
  local raw = redis.call('HGET', holds, due)
  if raw then
    local h = cjson.decode(raw)
    redis.call('HINCRBY', reserved, 'm:' .. h.month, -tonumber(h.amount))
    if h.job ~= '' then redis.call('HINCRBY', reserved, 'j:' .. h.job, -tonumber(h.amount)) end
    redis.call('HDEL', holds, due)
  end
  redis.call('ZREM', expiry, due)
end
local function used(key)
  return tonumber(redis.call('HGET', spent, key) or '0') + tonumber(redis.call('HGET', reserved, key) or '0')
end
local limit = tonumber(redis.call('HGET', limits, 'tenant'))
if limit > 0 then
  local u = used('m:' .. month)
  if u + amount > limit then return {'TENANT', tostring(limit), tostring(limit - u)} end
end
if job ~= '' then
  local job_limit = tonumber(redis.call('HGET', limits, 'j:' .. job) or '0')
  if job_limit > 0 then
    local u = used('j:' .. job)
    if u + amount > job_limit then return {'JOB', tostring(job_limit), tostring(job_limit - u)} end
  end
end
redis.call('HSET', holds, id, cjson.encode({month = month, job = job, amount = ARGV[4], expire = expire,
                                            create = tonumber(ARGV[6])}))
redis.call('ZADD', expiry, expire, id)
redis.call('HINCRBY', reserved, 'm:' .. month, amount)
if job ~= '' then redis.call('HINCRBY', reserved, 'j:' .. job, amount) end
return {'OK'}
"""

_SETTLE = """
local holds, expiry, spent, reserved, settled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, month, job, actual, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('HEXISTS', settled, id) == 1 then return 0 end
redis.call('HSET', settled, id, cjson.encode({at = now, month = month, job = job, actual = ARGV[4]}))
local raw = redis.call('HGET', holds, id)
if raw then
  local h = cjson.decode(raw)
  redis.call('HINCRBY', reserved, 'm:' .. h.month, -tonumber(h.amount))
  if h.job ~= '' then redis.call('HINCRBY', reserved, 'j:' .. h.job, -tonumber(h.amount)) end
  redis.call('HDEL', holds, id)
  redis.call('ZREM', expiry, id)
end
if actual > 0 then
  redis.call('HINCRBY', spent, 'm:' .. month, actual)
  if job ~= '' then redis.call('HINCRBY', spent, 'j:' .. job, actual) end
end
return 1
"""

_SET_LIMIT = """
if redis.call('HEXISTS', KEYS[1], 'tenant') == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

_REBUILD = """
local holds, expiry, spent, reserved, limits, settled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local d = cjson.decode(ARGV[1])
local in_ledger, finished, is_settled, extra = {}, {}, {}, {}
for _, h in ipairs(d.holds) do in_ledger[h.id] = true end
for _, id in ipairs(d.finished) do finished[id] = true end
local entries = redis.call('HGETALL', settled)
for i = 1, #entries, 2 do
  local id, s = entries[i], cjson.decode(entries[i + 1])
  if s.at < d.prune_before then
    redis.call('HDEL', settled, id)
  else
    is_settled[id] = true
    -- Settled after the snapshot was read: the ledger's spending does not include it yet.
    local actual = tonumber(s.actual)
    if not finished[id] and s.at >= d.recent_after and actual > 0 then
      extra['m:' .. s.month] = (extra['m:' .. s.month] or 0) + actual
      if s.job ~= '' then extra['j:' .. s.job] = (extra['j:' .. s.job] or 0) + actual end
    end
  end
end
for id, _ in pairs(finished) do
  if not is_settled[id] then
    redis.call('HSET', settled, id, cjson.encode({at = d.now, month = '', job = '', actual = '0'}))
    is_settled[id] = true
  end
end
local keep = {}
local current = redis.call('HGETALL', holds)
for i = 1, #current, 2 do
  local id, h = current[i], cjson.decode(current[i + 1])
  if not in_ledger[id] and not is_settled[id] and h.create >= d.keep_after and h.expire > d.now then
    h.id = id
    keep[#keep + 1] = h
  end
end
redis.call('DEL', holds, expiry, spent, reserved, limits)
redis.call('HSET', limits, 'tenant', d.tenant_limit)
for job, limit in pairs(d.job_limits) do redis.call('HSET', limits, 'j:' .. job, limit) end
for key, value in pairs(d.spent) do redis.call('HINCRBY', spent, key, value) end
for key, value in pairs(extra) do redis.call('HINCRBY', spent, key, value) end
local function add(h)
  redis.call('HSET', holds, h.id, cjson.encode({month = h.month, job = h.job, amount = h.amount,
                                                expire = h.expire, create = h.create}))
  redis.call('ZADD', expiry, h.expire, h.id)
  redis.call('HINCRBY', reserved, 'm:' .. h.month, tonumber(h.amount))
  if h.job ~= '' then redis.call('HINCRBY', reserved, 'j:' .. h.job, tonumber(h.amount)) end
end
for _, h in ipairs(d.holds) do
  if not is_settled[h.id] and h.expire > d.now then add(h) end
end
for _, h in ipairs(keep) do add(h) end
return #d.holds + #keep
"""


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class RedisBudgetGate:
    """The Redis check-and-hold (`cohort.services.budget.service.HoldGate`), rebuilt from `ledger`."""

    def __init__(
        self,
        url: str,
        ledger: BudgetLedger,
        *,
        reconcile_seconds: float = 300.0,
        grace_seconds: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        key_prefix: str = "cohort:budget",
    ) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.ledger = ledger
        self.reconcile_seconds = reconcile_seconds
        self.grace = timedelta(seconds=grace_seconds)
        self._monotonic = monotonic
        self._redis = None
        self._scripts: dict[str, object] = {}
        self._reconciled_at: dict[str, float] = {}
        self._all_reconciled_at: float | None = None
        self._starting = asyncio.Lock()
        self._started = False
        # Bounds this process's connections: a burst of calls waits here rather than failing with
        # the client pool's "Too many connections".
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    def _keys(self, tenant_id: str, *names: str) -> list[str]:
        return [f"{self.key_prefix}:{{{tenant_id}}}:{name}" for name in names]

    async def _connection(self):
        """The Redis client with the scripts registered (no rebuild)."""
        if self._redis is None:
            client = await connect_redis(self.url)
            if self._redis is None:
                for name, source in (
                    ("hold", _HOLD),
                    ("settle", _SETTLE),
                    ("limit", _SET_LIMIT),
                    ("rebuild", _REBUILD),
                ):
                    self._scripts[name] = client.register_script(source)
                self._redis = client
            else:
                await client.aclose()
        return self._redis

    async def _ready(self) -> None:
        """Connected, and rebuilt from the ledger once (start-up) before the first hold."""
        if self._started:
            return
        async with self._starting:
            if not self._started:
                await self.reconcile_all()
                self._started = True

    async def _exec(self, name: str, keys: list[str], args: list) -> object:
        await self._connection()
        try:
            async with self._slots:
                return await self._scripts[name](keys=keys, args=args)
        except RedisError as error:
            raise Unavailable(f"the budget's Redis failed: {error}") from error

    async def _run(self, name: str, keys: list[str], args: list) -> object:
        await self._ready()
        return await self._exec(name, keys, args)

    # -- the gate ---------------------------------------------------------------------------------

    async def hold(self, reservation: Reservation, now: datetime) -> None:
        tenant_id = reservation.tenant_id
        last = self._reconciled_at.get(tenant_id)
        if last is not None and self._monotonic() - last >= self.reconcile_seconds:
            await self.reconcile(tenant_id)
        for _ in range(3):
            result = await self._run(
                "hold",
                self._keys(tenant_id, "holds", "expiry", "spent", "reserved", "limits"),
                [
                    reservation.reservation_id,
                    reservation.month,
                    reservation.job_id,
                    reservation.amount_micro_usd,
                    _ms(reservation.expire_time),
                    _ms(reservation.create_time),
                    _ms(now),
                ],
            )
            verdict = result[0].decode()
            if verdict == "OK":
                return
            if verdict == "LOAD":  # never loaded, or Redis lost it: rebuild from the ledger
                await self.reconcile(tenant_id)
                continue
            scope = Scope.TENANT_MONTHLY if verdict == "TENANT" else Scope.JOB
            raise exhausted(
                scope,
                int(result[1]),
                max(0, int(result[2])),
                reservation.amount_micro_usd,
                month=reservation.month,
                job_id=reservation.job_id,
            )
        raise Unavailable("the budget's Redis keeps losing its data")

    async def settle(self, reservation: Reservation, now: datetime) -> None:
        await self._run(
            "settle",
            self._keys(reservation.tenant_id, "holds", "expiry", "spent", "reserved", "settled"),
            [
                reservation.reservation_id,
                reservation.month,
                reservation.job_id,
                reservation.spent_micro_usd,
                _ms(now),
            ],
        )

    async def limit_changed(self, tenant_id: str, scope: Scope, job_id: str, limit: int) -> None:
        field = "tenant" if scope is Scope.TENANT_MONTHLY else f"j:{job_id}"
        await self._run("limit", self._keys(tenant_id, "limits"), [field, limit])

    # -- rebuilding from the ledger ---------------------------------------------------------------

    async def reconcile(self, tenant_id: str) -> int:
        """Rebuilds the tenant's keys from the ledger; returns how many holds Redis has now."""
        now = self.ledger.now()
        snapshot = await self.ledger.snapshot(tenant_id, finished_since=now - 2 * self.grace)
        payload = {
            "now": _ms(now),
            "keep_after": _ms(now - self.grace),
            "recent_after": _ms(now - self.grace),
            "prune_before": _ms(now - SETTLED_RETENTION),
            "tenant_limit": snapshot.monthly_limit_micro_usd,
            "job_limits": snapshot.job_limits,
            "spent": snapshot.spent,
            "holds": [
                {
                    "id": hold.reservation_id,
                    "month": hold.month,
                    "job": hold.job_id,
                    "amount": str(hold.amount_micro_usd),
                    "expire": _ms(hold.expire_time),
                    "create": _ms(hold.create_time),
                }
                for hold in snapshot.holds
            ],
            "finished": snapshot.finished_ids,
        }
        held = await self._exec(
            "rebuild",
            self._keys(tenant_id, "holds", "expiry", "spent", "reserved", "limits", "settled"),
            [json.dumps(payload)],
        )
        self._reconciled_at[tenant_id] = self._monotonic()
        return int(held)

    async def reconcile_all(self) -> None:
        for tenant_id in await self.ledger.tenants():
            await self.reconcile(tenant_id)
        self._all_reconciled_at = self._monotonic()

    async def maintain(self) -> None:
        if (
            self._all_reconciled_at is None
            or self._monotonic() - self._all_reconciled_at >= self.reconcile_seconds
        ):
            await self.reconcile_all()

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
