"""Admitting a request: its budgets and its in-flight lease judged together, in process and on Redis (one
script) alike; with Redis gone, the general budgets hold per process and sign-in is refused."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tenantry.ratelimit.admission import Admission, Budget, LocalAdmission, RedisAdmission, Verdict
from tenantry.ratelimit.batching import RedisBatcher
from tenantry.ratelimit.concurrency import MemoryConcurrency, RedisConcurrency
from tenantry.ratelimit.gcra import Rate
from tenantry.ratelimit.limiter import Limiter, LimiterUnavailable
from tenantry.ratelimit.policies import LimitPolicy, Subject
from tenantry.ratelimit.store import MemoryStore, RedisStore
from tests.conftest import free_port

RATE = Rate(limit=5, period=10, burst=3)  # 3 at once, then one per 2 s
BY_IP = LimitPolicy("test.ip", "api", Subject.IP, RATE)
BY_USER = LimitPolicy("test.principal", "api", Subject.PRINCIPAL, Rate(limit=100, period=100, burst=100))
SHADOW = LimitPolicy("test.shadow", "api", Subject.IP, Rate(limit=1, period=60, burst=1), shadow=True)
SIGN_IN = LimitPolicy("test.login", "login", Subject.IP, RATE, fail_closed=True)


def redis_admission(redis: Redis, *, in_flight: int) -> tuple[RedisAdmission, RedisBatcher]:
    batcher = RedisBatcher(redis)
    store = RedisStore(redis, batcher=batcher)
    local = LocalAdmission(MemoryStore(), MemoryConcurrency(), in_flight=in_flight, ttl=30)
    return RedisAdmission(Limiter(store), batcher, local), batcher


@pytest.fixture(params=["memory", "redis"])
async def admission(request: pytest.FixtureRequest, redis: Redis) -> AsyncIterator[Admission]:
    """Two requests in flight at most per holder."""
    if request.param == "memory":
        yield LocalAdmission(MemoryStore(), MemoryConcurrency(), in_flight=2, ttl=30)
        return
    admission, batcher = redis_admission(redis, in_flight=2)
    yield admission
    await batcher.close()


async def admit(admission: Admission, spend: list[Budget], *, cost: int = 1, holder: str | None = None) -> Verdict:
    return await admission.admit(admission.prepare(spend, cost=cost, holder=holder))


def release(admission: Admission, verdict: Verdict, holder: str) -> None:
    admission.release(admission.prepare([], cost=1, holder=holder), verdict)


def budgets(*policies: LimitPolicy, subject: str) -> list[Budget]:
    return [(policy, policy.rate, f"{policy.name}:{subject}") for policy in policies]


def summary(verdict: Verdict) -> tuple[list[tuple[bool, int]], bool, bool | None]:
    """(allowed, remaining) of each budget judged, whether one refused, whether a lease was granted."""
    remaining = verdict.told[::2]
    allowed = [True] * (len(remaining) - 1) + [verdict.refused is None] if remaining else []
    lease = verdict.lease.granted if verdict.lease is not None else None
    return list(zip(allowed, remaining, strict=True)), verdict.refused is not None, lease


async def test_budgets_are_spent_in_order_until_one_refuses(admission: Admission) -> None:
    subject = uuid.uuid4().hex
    spend = budgets(BY_IP, BY_USER, subject=subject)
    verdicts = [await admit(admission, spend) for _ in range(4)]

    assert [summary(v) for v in verdicts] == [
        ([(True, 2), (True, 99)], False, None),
        ([(True, 1), (True, 98)], False, None),
        ([(True, 0), (True, 97)], False, None),
        ([(False, 0)], True, None),  # refused by the first budget: the second is not judged, nor spent
    ]
    assert verdicts[3].refused is not None
    assert 1.9 < verdicts[3].refused.retry_after <= 2.0
    after = await admit(admission, budgets(BY_USER, subject=subject))
    assert summary(after)[0] == [(True, 96)]


async def test_a_request_may_cost_more_than_one(admission: Admission) -> None:
    spend = budgets(BY_IP, subject=uuid.uuid4().hex)

    first = await admit(admission, spend, cost=2, holder=None)
    second = await admit(admission, spend, cost=2, holder=None)

    assert summary(first) == ([(True, 1)], False, None)
    assert summary(second) == ([(False, 1)], True, None)


async def test_a_shadow_budget_counts_and_reports_but_never_refuses(admission: Admission) -> None:
    def refused_in_shadow() -> float:
        sample = {"policy": SHADOW.name, "outcome": "shadow_refused"}
        return REGISTRY.get_sample_value("tenantry_ratelimit_checks_total", sample) or 0.0

    before = refused_in_shadow()
    spend = budgets(SHADOW, BY_USER, subject=uuid.uuid4().hex)
    verdicts = [await admit(admission, spend) for _ in range(3)]

    assert [summary(v) for v in verdicts] == [
        ([(True, 0), (True, 99)], False, None),
        ([(True, 0), (True, 98)], False, None),  # over the shadow budget: reported as nothing left, judged on
        ([(True, 0), (True, 97)], False, None),
    ]
    assert refused_in_shadow() == before + 2


async def test_the_lease_is_taken_only_when_every_budget_allows(admission: Admission) -> None:
    holder = f"user:{uuid.uuid4().hex}"
    spend = budgets(BY_IP, subject=uuid.uuid4().hex)

    held = [await admit(admission, spend, holder=holder) for _ in range(3)]
    refused = await admit(admission, spend, holder=holder)  # budget spent: no lease asked for

    assert [summary(v) for v in held] == [
        ([(True, 2)], False, True),
        ([(True, 1)], False, True),
        ([(True, 0)], False, False),  # two in flight already
    ]
    assert held[2].lease is not None
    assert (held[2].lease.in_flight, held[2].lease.limit) == (2, 2)
    assert summary(refused) == ([(False, 0)], True, None)

    release(admission, held[0], holder)
    await asyncio.sleep(0.05)  # a release to Redis goes out with the next pipeline, unawaited
    again = await admit(admission, budgets(BY_USER, subject=uuid.uuid4().hex), holder=holder)
    assert summary(again)[2] is True


async def test_without_a_holder_no_lease_is_taken(admission: Admission) -> None:
    verdict = await admit(admission, budgets(BY_IP, subject=uuid.uuid4().hex))

    assert verdict.lease is None
    release(admission, verdict, "user:nobody")  # nothing to give back, and no error


async def test_on_redis_budgets_and_leases_are_the_stores_own(redis: Redis) -> None:
    admission, batcher = redis_admission(redis, in_flight=5)
    subject, holder = uuid.uuid4().hex, f"user:{uuid.uuid4().hex}"
    try:
        verdict = await admit(admission, budgets(BY_IP, subject=subject), holder=holder)
        alone = await RedisStore(redis).hit(f"{BY_IP.name}:{subject}", RATE)
        in_flight = await RedisConcurrency(redis).acquire(holder, limit=5, ttl=30)
    finally:
        await batcher.close()

    assert summary(verdict) == ([(True, 2)], False, True)
    assert alone.remaining == 1  # the same budget, spent once by the request and once alone
    assert in_flight.in_flight == 2  # the request's lease is held on the same key
    assert 2000 < await redis.pttl(f"tenantry:rl:{BY_IP.name}:{subject}") <= 4000  # two units spent
    assert 28_000 < await redis.pttl(f"tenantry:cc:{holder}") <= 30_000


async def test_with_redis_unreachable_requests_are_judged_per_process_and_sign_in_refused() -> None:
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    admission, batcher = redis_admission(unreachable, in_flight=1)
    holder = f"user:{uuid.uuid4().hex}"
    try:
        spend = budgets(BY_IP, subject=uuid.uuid4().hex)
        verdicts = [await admit(admission, spend, holder=holder) for _ in range(2)]
        with pytest.raises(LimiterUnavailable):
            await admit(admission, budgets(SIGN_IN, subject=uuid.uuid4().hex))
        release(admission, verdicts[0], holder)
        later = await admit(admission, spend, holder=holder)
    finally:
        await batcher.close()
        await unreachable.aclose()

    assert [summary(v) for v in verdicts] == [([(True, 2)], False, True), ([(True, 1)], False, False)]
    assert all(v.is_local for v in verdicts)
    assert summary(later) == ([(True, 0)], False, True)  # the per-process lease was given back


async def test_leases_given_back_together_are_all_freed(admission: Admission) -> None:
    holders = [f"user:{uuid.uuid4().hex}" for _ in range(3)]
    spend = budgets(BY_USER, subject=uuid.uuid4().hex)
    held = [await admit(admission, spend, holder=holder) for holder in holders for _ in range(2)]

    for verdict, holder in zip(held, [h for h in holders for _ in range(2)], strict=True):
        release(admission, verdict, holder)  # all in one loop turn: on Redis, in one batch
    await asyncio.sleep(0.05)
    again = [await admit(admission, spend, holder=holder) for holder in holders for _ in range(2)]

    assert [summary(v)[2] for v in held] == [True, True] * 3
    assert [summary(v)[2] for v in again] == [True, True] * 3


async def test_a_redis_that_does_not_know_the_scripts_yet_loads_them_and_judges(
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    fresh = Redis.from_url(own_redis[0])  # a new redis-server: no script loaded, as after a restart
    admission, batcher = redis_admission(fresh, in_flight=1)
    holder = f"user:{uuid.uuid4().hex}"
    try:
        first = await admit(admission, budgets(BY_IP, subject="x"), holder=holder)
        release(admission, first, holder)  # fired, with no one waiting: a plain ZREM
        await asyncio.sleep(0.05)
        second = await admit(admission, budgets(BY_IP, subject="x"), holder=holder)
    finally:
        await batcher.close()
        await fresh.aclose()

    assert summary(first) == ([(True, 2)], False, True)
    assert summary(second) == ([(True, 1)], False, True)
    assert not first.is_local


async def test_every_check_is_counted_by_policy_and_outcome(admission: Admission) -> None:
    def count(policy: LimitPolicy, outcome: str) -> float:
        sample = {"policy": policy.name, "outcome": outcome}
        return REGISTRY.get_sample_value("tenantry_ratelimit_checks_total", sample) or 0.0

    before = [count(BY_IP, "allowed"), count(BY_USER, "allowed"), count(BY_IP, "refused")]
    spend = budgets(BY_IP, BY_USER, subject=uuid.uuid4().hex)
    for _ in range(4):  # three allowed by both budgets, then refused by the first
        await admit(admission, spend)

    after = [count(BY_IP, "allowed"), count(BY_USER, "allowed"), count(BY_IP, "refused")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3, 1]
