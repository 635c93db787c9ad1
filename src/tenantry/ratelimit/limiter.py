"""The limiter every door asks: a store, what to do when the shared store is down, and shadow mode.

When Redis cannot be reached, a fail-open check is answered by a per-process store instead (limits
then hold per process rather than for the fleet: still enough to stop one client flooding), and a
fail-closed one (signing in) is refused with ``LimiterUnavailable``; either way a warning is logged
and counted, and nothing answers 500. A policy in shadow mode is counted and reported, never refused.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import structlog
from prometheus_client import Counter

from tenantry.core.errors import Unavailable
from tenantry.ratelimit.gcra import Decision, Rate
from tenantry.ratelimit.store import LimiterStore, MemoryStore, StoreUnavailable

log = structlog.get_logger(__name__)

CHECKS = Counter("tenantry_ratelimit_checks_total", "Rate-limit checks by policy and outcome.", ["policy", "outcome"])
STORE_FAILURES = Counter(
    "tenantry_ratelimit_store_failures_total", "Checks the shared store could not answer, by what followed.", ["then"]
)


@functools.cache
def _counter(policy: str, outcome: str) -> Any:
    """The labelled child counter, looked up once (``labels()`` costs a lock and a dict per call)."""
    return CHECKS.labels(policy, outcome)


class LimiterUnavailable(Unavailable):
    """A fail-closed limit could not be checked (the shared store is down): refuse rather than guess."""

    code = "rate_limiter_unavailable"
    title = "Temporarily unavailable; try again shortly"


class Limiter:
    def __init__(self, store: LimiterStore, *, fallback: LimiterStore | None = None) -> None:
        self.store = store
        self.fallback = fallback or (store if isinstance(store, MemoryStore) else MemoryStore())
        self._warned_at = 0.0

    async def hit(
        self,
        key: str,
        rate: Rate,
        *,
        cost: int = 1,
        peek: bool = False,
        fail_closed: bool = False,
        policy: str = "",
        shadow: bool = False,
    ) -> Decision:
        """Judge a request of ``cost`` on ``key``. Raises ``LimiterUnavailable`` only for a fail-closed check
        the shared store could not answer. A shadow refusal is reported and then allowed."""
        try:
            decision = await self.store.hit(key, rate, cost=cost, peek=peek)
        except StoreUnavailable as exc:
            self._warn(exc, fail_closed=fail_closed)
            if fail_closed:
                STORE_FAILURES.labels("refused").inc()
                raise LimiterUnavailable("The rate limiter cannot be reached; try again in a moment.") from exc
            STORE_FAILURES.labels("per_process").inc()
            decision = await self.fallback.hit(key, rate, cost=cost, peek=peek)
        if policy and not peek:
            outcome = "allowed" if decision.allowed else ("shadow_refused" if shadow else "refused")
            _counter(policy, outcome).inc()
        if shadow and not decision.allowed:
            log.info("ratelimit.shadow_refusal", policy=policy, key=key)
            return Decision(True, 0, 0.0, decision.reset_after)
        return decision

    def _warn(self, exc: StoreUnavailable, *, fail_closed: bool) -> None:
        now = time.monotonic()
        if now - self._warned_at > 5:  # once per 5 s: a dead Redis must not flood the log
            self._warned_at = now
            then = "refusing fail-closed checks" if fail_closed else "limiting per process"
            log.warning("ratelimit.store_unavailable", error=str(exc), then=then)
