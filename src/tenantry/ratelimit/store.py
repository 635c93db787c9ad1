"""Where limiter state lives: in this process (embedded shape) or in Redis (cluster shape).

A store applies :func:`tenantry.ratelimit.gcra.decide` atomically per key, so two concurrent
requests can never both take the last unit of a budget.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from math import ceil, floor
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.ratelimit.batching import Call, RedisBatcher
from tenantry.ratelimit.gcra import EPSILON, Decision, Rate, Step, decide, step
from tenantry.ratelimit.lua import GCRA_SCRIPT

log = structlog.get_logger(__name__)

# One budget as the in-process admission spends it: its key, what the request costs it in seconds (cost times
# the emission interval), the emission interval, and the tolerance (burst times the interval).
Spend = tuple[str, float, float, float]
_NEVER = float("-inf")  # the TAT of a key never spent (or long full again): in the past, whatever now is


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
        if peek:
            decision, _ = decide(rate, self._tat.get(key), now, cost)
            return decision
        allowed, remaining, retry_after, reset_after, _ = self.take(key, rate, cost, now)
        return Decision(allowed, remaining, retry_after, reset_after)

    def take(self, key: str, rate: Rate, cost: int, now: float) -> Step:
        """Spend ``cost`` on ``key`` if its budget allows, at ``now`` on the monotonic clock (one reading for
        all the checks of a request); the GCRA step in plain values."""
        judged = step(rate.emission_interval, rate.tolerance, self._tat.get(key), now, cost)  # past TAT: full
        if judged[0]:
            self._tat[key] = judged[4]
        if now - self._last_sweep >= 60 or len(self._tat) >= self._max_keys:
            self._sweep(now)
        return judged

    def spend(self, spends: Sequence[Spend], now: float, told: list[int]) -> int:
        """Spend each budget of ``spends`` in order while it allows, at ``now``; for each one spent, what remains
        and the seconds until it is full again are appended to ``told``. Returns how many were spent: when fewer
        than all, the next one would refuse, and nothing after it was looked at (:meth:`take` judges it).

        The GCRA step of :func:`tenantry.ratelimit.gcra.step` for a request it allows, the same float operations
        in the same order (so the same answers to the bit), written out here because every request of every
        client runs it for each of its budgets, and a call per budget cost more than the arithmetic.
        """
        tats = self._tat
        told_before = len(told)
        for key, increment, interval, tolerance in spends:
            tat = tats.get(key, _NEVER)
            new_tat = (tat if tat > now else now) + increment
            if new_tat - tolerance - now > EPSILON:
                break
            tats[key] = new_tat
            # floor, not int(): the same for what is told (a negative is told as 0), and half the cost.
            left = floor((tolerance - (new_tat - now)) / interval + EPSILON)
            told += (left if left > 0 else 0, ceil(new_tat - now))
        if now - self._last_sweep >= 60 or len(tats) >= self._max_keys:
            self._sweep(now)
        return (len(told) - told_before) // 2

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]


class StoreUnavailable(Exception):
    """The shared store could not be asked; the limiter's policy decides what happens then."""


class RedisStore:
    """Limiter state in Redis, shared by every process: one EVALSHA per check. Raises
    ``StoreUnavailable`` when Redis cannot be reached (see ``Limiter`` for what follows)."""

    def __init__(self, redis: Redis, *, prefix: str = "tenantry:rl:", batcher: RedisBatcher | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.script = redis.register_script(GCRA_SCRIPT)
        # With a batcher, the checks of requests arriving together share one round trip, and a check of a
        # rate seen before is packed but for its key.
        self.batcher = batcher
        # Keyed by what the packed call holds: a tuple of floats hashes in C, a Rate (a frozen dataclass) by a
        # Python __hash__ on every check.
        self._calls: dict[tuple[float, float, int, bool], Call] = {}

    async def hit(self, key: str, rate: Rate, *, cost: int = 1, peek: bool = False) -> Decision:
        try:
            if self.batcher is not None:
                call = self._calls.get((rate.emission_interval, rate.tolerance, cost, peek)) or self._call(
                    rate, cost, peek
                )
                reply = await self.batcher.call(call, self.prefix + key)
            else:
                reply = await self.script(keys=[self.prefix + key], args=_args(rate, cost, peek))
            allowed, remaining, retry_after, reset_after = reply
        except RedisError as exc:
            raise StoreUnavailable(repr(exc)) from exc
        return Decision(allowed == 1, remaining, float(retry_after), float(reset_after))

    def _call(self, rate: Rate, cost: int, peek: bool) -> Call:
        if len(self._calls) >= 1024:  # rates made per webhook endpoint, say: keep a bounded few
            self._calls.clear()
        call = Call.evalsha(self.script, 1, (), _args(rate, cost, peek))
        self._calls[rate.emission_interval, rate.tolerance, cost, peek] = call
        return call


def _args(rate: Rate, cost: int, peek: bool) -> list[float | int | str]:
    """The GCRA script's arguments after its key."""
    return [rate.emission_interval, rate.tolerance, cost, "1" if peek else "0"]
