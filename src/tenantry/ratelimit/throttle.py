"""Throttling of failures (wrong passwords, guessed tokens) by email, account and client address.

Each failure spends one unit of a GCRA budget per key. Once a key's budget is spent, every attempt
on it is refused with ``TooManyRequests`` (even one with the right password) until the budget
refills, which is what makes guessing pointless.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tenantry.core.errors import TooManyRequests
from tenantry.ratelimit.gcra import Rate
from tenantry.ratelimit.limiter import Limiter


class FailureThrottle:
    """Fails closed: with the shared store down, sign-ins are refused (``LimiterUnavailable``) rather
    than let a guesser spread attempts over processes."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    async def check(self, keys: Sequence[tuple[str, Rate]]) -> None:
        """Raise ``TooManyRequests`` if any key has no failure left to spend."""
        worst = 0.0
        for key, rate in keys:
            decision = await self.limiter.hit(key, rate, peek=True, fail_closed=True)
            if not decision.allowed:
                worst = max(worst, decision.retry_after)
        if worst > 0:
            raise TooManyRequests(
                f"Too many failed attempts. Try again in {math.ceil(worst)} seconds.", retry_after=worst
            )

    async def spend(self, key: str, rate: Rate) -> None:
        """Take one unit of a budget (say, mails sent) in one atomic step; ``TooManyRequests`` when none is left."""
        decision = await self.limiter.hit(key, rate, fail_closed=True, policy="budget")
        if not decision.allowed:
            raise TooManyRequests(
                f"Too many requests. Try again in {math.ceil(decision.retry_after)} seconds.",
                retry_after=decision.retry_after,
            )

    async def fail(self, keys: Sequence[tuple[str, Rate]]) -> None:
        """Spend one failure on every key."""
        for key, rate in keys:
            await self.limiter.hit(key, rate, fail_closed=True, policy="failures")
