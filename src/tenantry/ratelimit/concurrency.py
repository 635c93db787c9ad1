"""Concurrency limits: at most ``limit`` requests in flight per key, in this process or across the fleet.

A request takes a :class:`Lease` before it starts and releases it when it ends. A lease also expires by
itself ``ttl`` seconds after it was granted, so a process that is killed mid-request (and so never
releases) holds its slots for at most ``ttl``: choose ``ttl`` longer than the slowest request you
want counted, since a request that outlives its lease stops counting against the limit.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from tenantry.ratelimit.batching import Call, RedisBatcher
from tenantry.ratelimit.lua import ACQUIRE_SCRIPT


# Not frozen: a frozen dataclass's __init__ costs about a microsecond, paid for every request.
@dataclass(slots=True)
class Lease:
    key: str
    id: str | int  # an int in process (a counter), a string unique across the fleet on Redis
    granted: bool
    in_flight: int  # leases held on the key after this acquire, whether it was granted or not
    limit: int


class ConcurrencyStore(Protocol):
    async def acquire(self, key: str, *, limit: int, ttl: float) -> Lease:
        """Take one of ``limit`` slots on ``key`` for at most ``ttl`` seconds; ``granted`` says if one was free."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give the slot back; releasing an ungranted, expired or already released lease does nothing."""
        ...


def _check(limit: int, ttl: float) -> None:
    if limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    if ttl <= 0:
        raise ValueError(f"ttl must be > 0, not {ttl}")


class MemoryConcurrency:
    """Leases held in this process: per key, lease id -> expiry on the monotonic clock, in the order
    granted, so expired leases are found at the front in constant time (one ttl per key in practice).

    Acquire and release never await, so on one event loop each is atomic without a lock.
    """

    def __init__(self, *, sweep_every: float = 60.0) -> None:
        self._leases: dict[str, dict[str | int, float]] = {}
        self._ids = itertools.count()
        self._sweep_every = sweep_every
        self._last_sweep = time.monotonic()

    async def acquire(self, key: str, *, limit: int, ttl: float) -> Lease:
        """Drop the key's expired leases, then grant a new one if fewer than ``limit`` remain."""
        _check(limit, ttl)
        return self.take(key, limit, ttl, time.monotonic())

    def take(self, key: str, limit: int, ttl: float, now: float) -> Lease:
        """``acquire`` without awaiting, at ``now`` on the monotonic clock, its arguments vouched for by the
        caller (the admission of every request calls this)."""
        leases = self._leases.get(key)
        if leases is None:
            leases = self._leases[key] = {}
        else:
            for expires_at in leases.values():  # only the oldest: is any expired?
                if expires_at <= now:
                    self._expire(leases, now)
                break
        lease_id = next(self._ids)
        held = len(leases)
        if held >= limit:  # rare mixed ttls: look at every lease before refusing
            for expired in [i for i, expires_at in leases.items() if expires_at <= now]:
                del leases[expired]
            held = len(leases)
        if held < limit:
            leases[lease_id] = now + ttl
            held += 1
            granted = True
        else:
            granted = False
            if not leases:
                del self._leases[key]  # limit 0: keep no empty entry behind
        if now - self._last_sweep >= self._sweep_every:
            self._sweep(now)
        return Lease(key, lease_id, granted, held, limit)

    @staticmethod
    def _expire(leases: dict[str | int, float], now: float) -> None:
        """Drop the key's expired leases from the front (the order they were granted in)."""
        while leases:
            oldest = next(iter(leases))
            if leases[oldest] > now:
                break
            del leases[oldest]

    async def release(self, lease: Lease) -> None:
        """Free the lease's slot (a no-op for an ungranted or already released lease)."""
        self.release_now(lease)

    def release_now(self, lease: Lease) -> None:
        """``release`` without awaiting."""
        if not lease.granted:
            return
        leases = self._leases.get(lease.key)
        if leases is None:
            return
        leases.pop(lease.id, None)
        if not leases:
            del self._leases[lease.key]

    def _sweep(self, now: float) -> None:
        # Keys whose leases all expired unreleased and are never asked for again would otherwise stay forever.
        self._last_sweep = now
        for key in [k for k, leases in self._leases.items() if all(e <= now for e in leases.values())]:
            del self._leases[key]


class RedisConcurrency:
    """Leases held in a Redis sorted set per key, shared by every process that uses the same Redis.

    Errors from Redis (``redis.exceptions.RedisError``) are raised to the caller, who decides whether an
    unreachable Redis lets requests through or refuses them. If the caller is cancelled after the script
    ran, the lease is granted but unknown to it; it then expires after ``ttl`` like one of a dead process.
    """

    def __init__(self, redis: Redis, *, prefix: str = "tenantry:cc:", batcher: RedisBatcher | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.script = redis.register_script(ACQUIRE_SCRIPT)
        # With a batcher, acquires share pipelines with other limiter calls, and releases are sent in the
        # next pipeline without anyone waiting for them (a lost one expires after its ttl).
        self.batcher = batcher

    async def acquire(self, key: str, *, limit: int, ttl: float) -> Lease:
        """Grant a lease if fewer than ``limit`` unexpired leases are held on ``key``; one EVALSHA."""
        _check(limit, ttl)
        lease_id = uuid.uuid4().hex
        args: list[str | int] = [limit, repr(float(ttl)), lease_id]
        if self.batcher is not None:
            granted, in_flight = await self.batcher.run(self.script, 1, [self.prefix + key, *args])
        else:
            granted, in_flight = await self.script(keys=[self.prefix + key], args=args)
        return Lease(key, lease_id, bool(granted), int(in_flight), limit)

    async def release(self, lease: Lease) -> None:
        """Remove the lease (one ZREM); a no-op for an ungranted lease, and harmless once it has expired."""
        if not lease.granted:
            return
        if self.batcher is not None:
            self.batcher.fire(Call.command("ZREM", self.prefix + lease.key), lease.id)
        else:
            await self.redis.zrem(self.prefix + lease.key, lease.id)
