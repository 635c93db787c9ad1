"""The limiter every door asks: a store, what to do when the shared store is down, and shadow mode.

When Redis cannot be reached, a fail-open check is answered by a per-process store instead (limits
then hold per process rather than for the fleet: still enough to stop one client flooding), and a
fail-closed one (signing in) is refused with ``LimiterUnavailable``; either way a warning is logged
and counted, and nothing answers 500. A policy in shadow mode is counted and reported, never refused.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator

import structlog
from prometheus_client import REGISTRY, Counter
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from tenantry.core.errors import Unavailable
from tenantry.ratelimit.gcra import Decision, Rate
from tenantry.ratelimit.store import LimiterStore, MemoryStore, StoreUnavailable

log = structlog.get_logger(__name__)

STORE_FAILURES = Counter(
    "tenantry_ratelimit_store_failures_total", "Checks the shared store could not answer, by what followed.", ["then"]
)


class CheckCounts:
    """``tenantry_ratelimit_checks_total`` by policy and outcome, counted in plain dicts (one per outcome,
    keyed by policy) and read when scraped. Every check of every request is counted, and a
    prometheus_client child counter takes a lock on each increment; only the event loop's thread counts
    here, so the lock buys nothing."""

    def __init__(self) -> None:
        self.allowed: defaultdict[str, int] = defaultdict(int)
        self.refused: defaultdict[str, int] = defaultdict(int)
        self.shadow_refused: defaultdict[str, int] = defaultdict(int)
        # Requests every budget of which allowed, by their policies: one count per request instead of one per
        # budget, spread over the policies when scraped.
        self.passed: defaultdict[tuple[str, ...], int] = defaultdict(int)

    def counts(self, outcome: str) -> dict[str, int]:
        """Checks of ``outcome`` so far, by policy."""
        counts = dict(getattr(self, outcome))
        if outcome == "allowed":
            for policies, count in list(self.passed.items()):
                for policy in policies:
                    counts[policy] = counts.get(policy, 0) + count
        return counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "tenantry_ratelimit_checks", "Rate-limit checks by policy and outcome.", labels=["policy", "outcome"]
        )
        for outcome in ("allowed", "refused", "shadow_refused"):
            for policy, count in self.counts(outcome).items():
                family.add_metric([policy, outcome], count)
        yield family


CHECKS = CheckCounts()
REGISTRY.register(CHECKS)  # module level: registered once per process, as prometheus_client's registry wants


def settle(decision: Decision, *, policy: str, key: str, shadow: bool) -> Decision:
    """Count a check of ``policy``; a refusal in shadow mode is logged and then reported as allowed, with
    nothing left."""
    if decision.allowed:
        CHECKS.allowed[policy] += 1
        return decision
    if refused_in_shadow(policy=policy, key=key, shadow=shadow):
        return Decision(True, 0, 0.0, decision.reset_after)
    return decision


def refused_in_shadow(*, policy: str, key: str, shadow: bool) -> bool:
    """Count a refusal by ``policy``; whether it was in shadow mode (logged, and to be let through)."""
    if not shadow:
        CHECKS.refused[policy] += 1
        return False
    CHECKS.shadow_refused[policy] += 1
    log.info("ratelimit.shadow_refusal", policy=policy, key=key)
    return True


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
            self.unavailable(exc, fail_closed=fail_closed)
            decision = await self.fallback.hit(key, rate, cost=cost, peek=peek)
        if policy and not peek:
            return settle(decision, policy=policy, key=key, shadow=shadow)
        if shadow and not decision.allowed:
            log.info("ratelimit.shadow_refusal", policy=policy, key=key)
            return Decision(True, 0, 0.0, decision.reset_after)
        return decision

    def unavailable(self, exc: Exception, *, fail_closed: bool, checks: int = 1) -> None:
        """The shared store did not answer ``checks`` checks: warn and count, then raise
        ``LimiterUnavailable`` if they fail closed (otherwise the caller asks the per-process fallback)."""
        self._warn(exc, fail_closed=fail_closed)
        if fail_closed:
            STORE_FAILURES.labels("refused").inc(checks)
            raise LimiterUnavailable("The rate limiter cannot be reached; try again in a moment.") from exc
        STORE_FAILURES.labels("per_process").inc(checks)

    def _warn(self, exc: Exception, *, fail_closed: bool) -> None:
        now = time.monotonic()
        if now - self._warned_at > 5:  # once per 5 s: a dead Redis must not flood the log
            self._warned_at = now
            then = "refusing fail-closed checks" if fail_closed else "limiting per process"
            log.warning("ratelimit.store_unavailable", error=str(exc), then=then)
