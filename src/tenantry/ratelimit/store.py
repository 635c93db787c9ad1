"""Where limiter state lives: in this process (embedded shape) or in Redis (cluster shape).

A store applies :func:`tenantry.ratelimit.gcra.decide` atomically per key, so two concurrent
requests can never both take the last unit of a budget.
"""

from __future__ import annotations

import time
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.ratelimit.batching import RedisBatcher
from tenantry.ratelimit.gcra import Decision, Rate, decide

log = structlog.get_logger(__name__)


class LimiterStore(Protocol):
    async def hit(self, key: str, rate: Rate, *, cost: int = 1, peek: bool = False) -> Decision:
        """Judge a request of ``cost`` on ``key``; with ``peek`` nothing is consumed."""
        ...


class MemoryStore:
    """One dict of TATs in this process; entries vanish once they hold no information."""

    def __init__(self, *, max_keys: int = 1_000_000) -> None:
        self._tat: dict[str, float] = {}
        self._max_keys = max_keys
        self._last_sweep = time.monotonic()

    async def hit(self, key: str, rate: Rate, *, cost: int = 1, peek: bool = False) -> Decision:
        now = time.monotonic()
        tat = self._tat.get(key)
        if tat is not None and tat <= now:
            tat = None  # a TAT in the past means a full burst, the same as no entry
        decision, new_tat = decide(rate, tat, now, cost)
        if not peek and decision.allowed:
            self._tat[key] = new_tat
        self._sweep(now)
        return decision

    def _sweep(self, now: float) -> None:
        if len(self._tat) < self._max_keys and now - self._last_sweep < 60:
            return
        self._last_sweep = now
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]


# GCRA in one round trip. Redis's own clock decides "now", so every process agrees on it; the key
# expires by itself once it holds no information (TAT in the past).
_GCRA_LUA = """
local key = KEYS[1]
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local peek = ARGV[4] == "1"
local clock = redis.call("TIME")
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tat = tonumber(redis.call("GET", key))
if tat == nil or tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - tolerance
if allow_at - now > 1e-9 then
  local remaining = math.max(0, math.floor((tolerance - (tat - now)) / interval))
  return {0, remaining, tostring(allow_at - now), tostring(tat - now)}
end
if not peek then
  redis.call("SET", key, tostring(new_tat), "PX", math.max(1, math.ceil((new_tat - now) * 1000)))
end
local remaining = math.max(0, math.floor((tolerance - (new_tat - now)) / interval))
return {1, remaining, "0", tostring(new_tat - now)}
"""


class StoreUnavailable(Exception):
    """The shared store could not be asked; the limiter's policy decides what happens then."""


class RedisStore:
    """Limiter state in Redis, shared by every process: one EVALSHA per check. Raises
    ``StoreUnavailable`` when Redis cannot be reached (see ``Limiter`` for what follows)."""

    def __init__(self, redis: Redis, *, prefix: str = "tenantry:rl:", batcher: RedisBatcher | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.script = redis.register_script(_GCRA_LUA)
        # With a batcher, the checks of requests arriving together share one pipeline (one round trip).
        self.batcher = batcher

    async def hit(self, key: str, rate: Rate, *, cost: int = 1, peek: bool = False) -> Decision:
        args = [rate.emission_interval, rate.tolerance, cost, "1" if peek else "0"]
        try:
            if self.batcher is not None:
                reply = await self.batcher.run(self.script, self.prefix + key, *args)
            else:
                reply = await self.script(keys=[self.prefix + key], args=args)
            allowed, remaining, retry_after, reset_after = reply
        except RedisError as exc:
            raise StoreUnavailable(repr(exc)) from exc
        return Decision(bool(allowed), int(remaining), float(retry_after), float(reset_after))
