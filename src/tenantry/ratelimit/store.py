"""Where limiter state lives. In-process here; a Redis store with a Lua script joins it later.

A store applies :func:`tenantry.ratelimit.gcra.decide` atomically per key, so two concurrent
requests can never both take the last unit of a budget.
"""

from __future__ import annotations

import time
from typing import Protocol

from tenantry.ratelimit.gcra import Decision, Rate, decide


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
