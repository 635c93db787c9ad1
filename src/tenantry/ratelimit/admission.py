"""Admitting one request: every budget it spends and its in-flight lease, judged in one step.

The rate-limit middleware asks once per request. In process that is a few dict operations and no await;
on Redis it is one script (one EVALSHA, in the pipeline the batcher sends for all the requests of one
loop turn) instead of one per budget and one more for the lease.

Budgets are judged in order and judging stops at the first refusal: the budgets before it stay spent, as
if the checks had been made one by one. A budget in shadow mode is counted and reported but never refuses.
The lease is asked for only once every budget has allowed the request, so a refused request holds none.
When Redis cannot be reached, the limiter's policy applies to the whole request: a fail-closed budget
refuses it (``LimiterUnavailable``), otherwise its budgets and its lease are judged in this process.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from tenantry.ratelimit.batching import RedisBatcher
from tenantry.ratelimit.concurrency import Lease, MemoryConcurrency
from tenantry.ratelimit.gcra import Decision, Rate
from tenantry.ratelimit.limiter import CHECKS, Limiter, settle
from tenantry.ratelimit.lua import ADMIT_SCRIPT
from tenantry.ratelimit.policies import LimitPolicy
from tenantry.ratelimit.store import MemoryStore

# One budget a request spends: the policy counting it, its rate (the policy's or the organization's), and
# the key of whoever it counts. A plain tuple: a few are made for every request.
Budget = tuple[LimitPolicy, Rate, str]


@dataclass(slots=True)
class Verdict:
    decisions: list[Decision]  # one per budget judged, in order (a shadow refusal reads as allowed, none left)
    refused: Decision | None  # the decision that refused the request, if one did
    lease: Lease | None = None  # the holder's lease, asked for only when no budget refused
    is_local: bool = False  # the lease is held in this process (the shared store could not be reached)


class Admission(Protocol):
    async def admit(self, budgets: Sequence[Budget], *, cost: int, holder: str | None) -> Verdict:
        """Judge ``budgets`` in order, then take one of ``holder``'s in-flight slots (none without a holder).
        Raises ``LimiterUnavailable`` when a fail-closed budget cannot be judged."""
        ...

    def release(self, verdict: Verdict) -> None:
        """Give back the verdict's lease, if it was granted; never waits and never raises."""
        ...


def _check(in_flight: int, ttl: float) -> None:
    if in_flight < 0 or ttl <= 0:
        raise ValueError(f"need in_flight >= 0 and ttl > 0, not {in_flight} and {ttl}")


class LocalAdmission:
    """Budgets and leases held in this process; nothing awaits, so each request is judged atomically."""

    def __init__(self, store: MemoryStore, leases: MemoryConcurrency, *, in_flight: int, ttl: float) -> None:
        _check(in_flight, ttl)
        self.store = store
        self.leases = leases
        self.in_flight = in_flight
        self.ttl = ttl

    async def admit(self, budgets: Sequence[Budget], *, cost: int, holder: str | None) -> Verdict:
        """See :class:`Admission`; never raises."""
        return self.admit_now(budgets, cost=cost, holder=holder)

    def admit_now(self, budgets: Sequence[Budget], *, cost: int, holder: str | None) -> Verdict:
        """``admit`` without awaiting."""
        decisions: list[Decision] = []
        hit = self.store.hit_now
        now = time.monotonic()
        for policy, rate, key in budgets:
            decision = hit(key, rate, cost=cost, now=now)
            if decision.allowed:
                CHECKS.counts[policy.name, "allowed"] += 1  # settle()'s common case, without the call
            else:
                decision = settle(decision, policy=policy.name, key=key, shadow=policy.shadow)
            decisions.append(decision)
            if not decision.allowed:
                return Verdict(decisions, decision)
        if holder is None:
            return Verdict(decisions, None)
        return Verdict(
            decisions, None, self.leases.acquire_now(holder, limit=self.in_flight, ttl=self.ttl, now=now), True
        )

    def release(self, verdict: Verdict) -> None:
        """See :class:`Admission`."""
        if verdict.lease is not None:
            self.leases.release_now(verdict.lease)


class RedisAdmission:
    """Budgets and leases in Redis, shared by every process: one script per request, sent through the
    batcher. ``local`` judges requests while Redis cannot be reached (for the budgets that fail open).

    Keys and lease ids are those of ``RedisStore`` and ``RedisConcurrency`` (same prefixes), so a check made
    alone and one made here spend the same budget.
    """

    def __init__(
        self,
        limiter: Limiter,
        batcher: RedisBatcher,
        local: LocalAdmission,
        *,
        budget_prefix: str = "tenantry:rl:",
        lease_prefix: str = "tenantry:cc:",
    ) -> None:
        self.limiter = limiter
        self.batcher = batcher
        self.local = local
        self.script = batcher.script(ADMIT_SCRIPT)
        self.budget_prefix = budget_prefix
        self.lease_prefix = lease_prefix
        self._lease_words = [str(local.in_flight), repr(float(local.ttl))]
        # Unique across the fleet without a uuid4 per request: a random prefix per process, then a counter.
        self._lease_ids = map(f"{uuid.uuid4().hex[:16]}-{{:x}}".format, itertools.count())
        self._rate_words: dict[Rate, tuple[str, str]] = {}

    async def admit(self, budgets: Sequence[Budget], *, cost: int, holder: str | None) -> Verdict:
        """See :class:`Admission`."""
        keys = [self.budget_prefix + key for _, _, key in budgets]
        lease_id = ""
        if holder is not None:
            keys.append(self.lease_prefix + holder)
            lease_id = next(self._lease_ids)
        words: list[Any] = [*keys, cost, *self._lease_words, lease_id]
        for policy, rate, _ in budgets:
            words += self._rate_words.get(rate) or self._words_of(rate)
            words.append("1" if policy.shadow else "0")
        try:
            reply = await self.batcher.run(self.script, len(keys), words)
        except RedisError as exc:
            self.limiter.unavailable(
                exc, fail_closed=any(policy.fail_closed for policy, _, _ in budgets), checks=len(budgets)
            )
            return self.local.admit_now(budgets, cost=cost, holder=holder)
        return self._verdict(budgets, reply, holder, lease_id)

    def _words_of(self, rate: Rate) -> tuple[str, str]:
        words = self._rate_words[rate] = (repr(rate.emission_interval), repr(rate.tolerance))
        return words

    def _verdict(self, budgets: Sequence[Budget], reply: list[Any], holder: str | None, lease_id: str) -> Verdict:
        decisions: list[Decision] = []
        at = 0
        for policy, _, key in budgets:
            allowed, remaining, retry_after, reset_after = reply[at : at + 4]
            at += 4
            decision = Decision(allowed == 1, remaining, float(retry_after), float(reset_after))
            decision = settle(decision, policy=policy.name, key=key, shadow=policy.shadow)
            decisions.append(decision)
            if not decision.allowed:
                return Verdict(decisions, decision)
        if holder is None:
            return Verdict(decisions, None)
        granted, held = reply[at : at + 2]
        return Verdict(decisions, None, Lease(holder, lease_id, granted == 1, held, self.local.in_flight))

    def release(self, verdict: Verdict) -> None:
        """See :class:`Admission`: a lease granted by Redis is removed in the next pipeline, unawaited (one
        that is lost expires after its ttl)."""
        lease = verdict.lease
        if lease is None or not lease.granted:
            return
        if verdict.is_local:
            self.local.release(verdict)
        else:
            self.batcher.fire("ZREM", self.lease_prefix + lease.key, lease.id)
