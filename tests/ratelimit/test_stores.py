"""Limiter stores: in-process and Redis (real server) judge alike, and Redis is shared by processes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tenantry.ratelimit.batching import Call, RedisBatcher
from tenantry.ratelimit.gcra import Rate
from tenantry.ratelimit.limiter import Limiter, LimiterUnavailable
from tenantry.ratelimit.store import LimiterStore, MemoryStore, RedisStore
from tenantry.ratelimit.throttle import FailureThrottle
from tests.conftest import REDIS_URL

RATE = Rate(limit=5, period=10, burst=3)  # 3 at once, then one per 2 s


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis: Redis) -> LimiterStore:
    return MemoryStore() if request.param == "memory" else RedisStore(redis)


async def test_a_burst_is_allowed_then_refused_with_the_time_to_wait(store: LimiterStore) -> None:
    key = uuid.uuid4().hex
    decisions = [await store.hit(key, RATE) for _ in range(4)]

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert 1.9 < decisions[3].retry_after <= 2.0


async def test_peeking_consumes_nothing(store: LimiterStore) -> None:
    key = uuid.uuid4().hex
    for _ in range(10):
        assert (await store.hit(key, RATE, peek=True)).allowed

    assert [(await store.hit(key, RATE)).allowed for _ in range(4)] == [True, True, True, False]


async def test_a_request_may_cost_more_than_one(store: LimiterStore) -> None:
    key = uuid.uuid4().hex

    assert (await store.hit(key, RATE, cost=3)).allowed
    assert not (await store.hit(key, RATE, cost=1)).allowed


async def test_processes_on_one_redis_share_one_budget(redis: Redis) -> None:
    other_process = Redis.from_url(REDIS_URL)
    try:
        here, there = RedisStore(redis), RedisStore(other_process)
        key = uuid.uuid4().hex
        outcomes = [(await (here if n % 2 else there).hit(key, RATE)).allowed for n in range(6)]
    finally:
        await other_process.aclose()

    assert outcomes.count(True) == 3


async def test_redis_keys_expire_by_themselves(redis: Redis) -> None:
    store = RedisStore(redis)
    key = uuid.uuid4().hex
    await store.hit(key, RATE)

    ttl_ms = await redis.pttl(store.prefix + key)

    assert 0 < ttl_ms <= 2000


async def test_with_redis_unreachable_general_limits_hold_per_process() -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = Limiter(RedisStore(unreachable))
    try:
        outcomes = [(await limiter.hit("api:x", RATE, policy="api.ip")).allowed for _ in range(4)]
    finally:
        await unreachable.aclose()

    assert outcomes == [True, True, True, False]


async def test_with_redis_unreachable_sign_in_throttling_fails_closed() -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    throttle = FailureThrottle(Limiter(RedisStore(unreachable)))
    try:
        with pytest.raises(LimiterUnavailable):
            await throttle.check([("login:x", RATE)])
    finally:
        await unreachable.aclose()


async def test_a_shadow_policy_reports_but_never_refuses() -> None:
    limiter = Limiter(MemoryStore())

    outcomes = [(await limiter.hit("k", RATE, policy="api.ip", shadow=True)).allowed for _ in range(6)]

    assert outcomes == [True] * 6


async def test_an_error_reply_fails_only_its_own_call_in_a_batch(redis: Redis) -> None:
    batcher = RedisBatcher(redis)
    key = f"tenantry:test:{uuid.uuid4().hex}"
    await redis.set(key, "not a number", ex=60)
    try:
        calls = [batcher.call(Call.command("PING"), "one"), batcher.call(Call.command("INCR"), key)]
        calls.append(batcher.call(Call.command("PING"), "two"))  # all three in one batch, one write
        replies = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await batcher.close()

    assert [replies[0], replies[2]] == [b"one", b"two"]
    assert isinstance(replies[1], ResponseError)
