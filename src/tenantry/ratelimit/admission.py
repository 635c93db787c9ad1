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
from dataclasses import dataclass, field
from math import ceil
from typing import Any, Protocol

from redis.exceptions import RedisError

from tenantry.ratelimit.batching import Call, RedisBatcher
from tenantry.ratelimit.concurrency import Lease, MemoryConcurrency
from tenantry.ratelimit.gcra import Decision, Rate
from tenantry.ratelimit.limiter import CHECKS, Limiter, refused_in_shadow
from tenantry.ratelimit.lua import ADMIT_SCRIPT
from tenantry.ratelimit.policies import LimitPolicy
from tenantry.ratelimit.store import MemoryStore, Spend

# One budget a request spends: the policy counting it, its rate (the policy's or the organization's), and
# the key of whoever it counts.
Budget = tuple[LimitPolicy, Rate, str]


@dataclass(slots=True, eq=False)
class Ticket:
    """What one kind of request asks for, prepared once and presented by every request of that kind: its
    budgets, its cost and the holder of its lease (on Redis, also its script call and release, packed)."""

    budgets: Sequence[Budget]
    cost: int
    holder: str | None  # whose in-flight slots it takes (None: it takes none)
    call: Call | None = None
    release: Call | None = None
    # Worked out once, for every request of the kind judged in process: each budget as MemoryStore.spend
    # takes it, and the policies counting them (counted together when every budget allows).
    spends: tuple[Spend, ...] = field(init=False)
    policies: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        cost = self.cost
        self.spends = tuple(
            (key, cost * rate.emission_interval, rate.emission_interval, rate.tolerance)
            for _, rate, key in self.budgets
        )
        self.policies = tuple(policy.name for policy, _, _ in self.budgets)


@dataclass(slots=True)
class Verdict:
    # For each budget judged, in order, what a client is told (RateLimit): what remains, then the seconds
    # until the budget is full again, or, for the budget that refused, until a request of this cost would
    # pass. A refusal in shadow mode reads as nothing left. Plain ints: no object per budget per request.
    told: list[int]
    refused: Decision | None = None  # the refusing budget's decision, if one refused
    lease: Lease | None = None  # the holder's lease, asked for only when no budget refused
    is_local: bool = False  # the lease is held in this process (the shared store could not be reached)


class Admission(Protocol):
    def prepare(self, budgets: Sequence[Budget], *, cost: int, holder: str | None) -> Ticket:
        """The ticket of requests spending ``budgets`` at ``cost`` and taking one of ``holder``'s slots."""
        ...

    async def admit(self, ticket: Ticket) -> Verdict:
        """Judge the ticket's budgets in order, then take one of its holder's in-flight slots. Raises
        ``LimiterUnavailable`` when a fail-closed budget cannot be judged."""
        ...

    def release(self, ticket: Ticket, verdict: Verdict) -> None:
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

    def prepare(self, budgets: Sequence[Budget], *, cost: int, holder: str | None) -> Ticket:
        """See :class:`Admission`."""
        return Ticket(budgets, cost, holder)

    async def admit(self, ticket: Ticket) -> Verdict:
        """See :class:`Admission`; never raises."""
        return self.admit_now(ticket)

    def admit_now(self, ticket: Ticket, now: float | None = None) -> Verdict:
        """``admit`` without awaiting, at ``now`` on the monotonic clock if given (one reading for every budget
        and the lease)."""
        if now is None:
            now = time.monotonic()
        told: list[int] = []
        spends = ticket.spends
        spent = self.store.spend(spends, now, told)
        if spent == len(spends):  # every budget allowed: the common case, judged without a call per budget
            CHECKS.passed[ticket.policies] += 1
        else:
            refusal = self._judge_from(ticket, spent, now, told)
            if refusal is not None:
                return refusal
        if ticket.holder is None:
            return Verdict(told)
        return Verdict(told, None, self.leases.take(ticket.holder, self.in_flight, self.ttl, now), True)

    def _judge_from(self, ticket: Ticket, spent: int, now: float, told: list[int]) -> Verdict | None:
        """Count the ``spent`` budgets, then judge the rest one by one from the first that would refuse: the
        verdict of the one that refuses, or None when only budgets in shadow mode did."""
        budgets = ticket.budgets
        for policy, _, _ in budgets[:spent]:
            CHECKS.allowed[policy.name] += 1
        take = self.store.take
        cost = ticket.cost
        for policy, rate, key in budgets[spent:]:
            allowed, remaining, retry_after, reset_after, _ = take(key, rate, cost, now)
            if allowed:
                CHECKS.allowed[policy.name] += 1
                told += (remaining, ceil(reset_after))
            elif refused_in_shadow(policy=policy.name, key=key, shadow=policy.shadow):
                told += (0, ceil(reset_after))
            else:
                told += (remaining, ceil(retry_after))
                return Verdict(told, Decision(False, remaining, retry_after, reset_after))
        return None

    def release(self, ticket: Ticket, verdict: Verdict) -> None:
        """See :class:`Admission`."""
        if verdict.lease is not None:
            self.leases.release_now(verdict.lease)


class RedisAdmission:
    """Budgets and leases in Redis, shared by every process: one script per request, sent through the
    batcher. ``local`` judges requests while Redis cannot be reached (for the budgets that fail open).

    Keys are those of ``RedisStore`` and ``RedisConcurrency`` (same prefixes), so a check made alone and
    one made here spend the same budget.
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
        # Unique across the fleet without a uuid4 per request: a random prefix per process, then a counter.
        self._lease_ids = map(f"{uuid.uuid4().hex[:16]}-{{:x}}".format, itertools.count())

    def prepare(self, budgets: Sequence[Budget], *, cost: int, holder: str | None) -> Ticket:
        """See :class:`Admission`: the script call is packed here, all but the lease id."""
        keys = [self.budget_prefix + key for _, _, key in budgets]
        args: list[Any] = [cost, self.local.in_flight, float(self.local.ttl)]
        for policy, rate, _ in budgets:
            args += (rate.emission_interval, rate.tolerance, "1" if policy.shadow else "0")
        release = None
        if holder is not None:
            keys.append(self.lease_prefix + holder)
            release = Call.command("ZREM", self.lease_prefix + holder)
        return Ticket(budgets, cost, holder, Call.evalsha(self.script, len(keys), [*keys, *args]), release)

    async def admit(self, ticket: Ticket) -> Verdict:
        """See :class:`Admission`."""
        assert ticket.call is not None, "a ticket prepared by this admission"
        lease_id = "" if ticket.holder is None else next(self._lease_ids)
        try:
            reply = await self.batcher.call(ticket.call, lease_id)
        except RedisError as exc:
            fail_closed = any(policy.fail_closed for policy, _, _ in ticket.budgets)
            self.limiter.unavailable(exc, fail_closed=fail_closed, checks=len(ticket.budgets))
            return self.local.admit_now(ticket)
        return self._verdict(ticket, reply, lease_id)

    def _verdict(self, ticket: Ticket, reply: list[Any], lease_id: str) -> Verdict:
        told: list[int] = []
        at = 0
        for policy, _, key in ticket.budgets:
            remaining = reply[at + 1]
            if reply[at] == 1:
                CHECKS.allowed[policy.name] += 1
                told += (remaining, ceil(float(reply[at + 3])))
            elif refused_in_shadow(policy=policy.name, key=key, shadow=policy.shadow):
                told += (0, ceil(float(reply[at + 3])))
            else:
                retry_after, reset_after = float(reply[at + 2]), float(reply[at + 3])
                told += (remaining, ceil(retry_after))
                return Verdict(told, Decision(False, remaining, retry_after, reset_after))
            at += 4
        if ticket.holder is None:
            return Verdict(told)
        return Verdict(told, None, Lease(ticket.holder, lease_id, reply[at] == 1, reply[at + 1], self.local.in_flight))

    def release(self, ticket: Ticket, verdict: Verdict) -> None:
        """See :class:`Admission`: a lease granted by Redis is removed in the next batch, unawaited (one that
        is lost expires after its ttl)."""
        lease = verdict.lease
        if lease is None or not lease.granted:
            return
        if verdict.is_local:
            self.local.release(ticket, verdict)
        elif ticket.release is not None:
            self.batcher.fire(ticket.release, lease.id)
