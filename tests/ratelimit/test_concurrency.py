"""Concurrency limits: in-process and Redis (real server) hold the limit alike, leases of dead holders
expire, and processes on one Redis share one limit."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.ratelimit.concurrency import ConcurrencyStore, Lease, MemoryConcurrency, RedisConcurrency
from tests.conftest import REDIS_URL, free_port


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis: Redis) -> ConcurrencyStore:
    return MemoryConcurrency() if request.param == "memory" else RedisConcurrency(redis)


async def test_the_limit_holds_and_a_release_frees_a_slot(store: ConcurrencyStore) -> None:
    key = uuid.uuid4().hex
    leases = [await store.acquire(key, limit=3, ttl=30) for _ in range(3)]
    refused = await store.acquire(key, limit=3, ttl=30)

    assert [(lease.granted, lease.in_flight) for lease in leases] == [(True, 1), (True, 2), (True, 3)]
    assert (refused.granted, refused.in_flight, refused.limit) == (False, 3, 3)

    await store.release(leases[0])
    again = await store.acquire(key, limit=3, ttl=30)

    assert (again.granted, again.in_flight) == (True, 3)


async def test_releasing_a_refused_or_released_lease_frees_nothing(store: ConcurrencyStore) -> None:
    key = uuid.uuid4().hex
    held = await store.acquire(key, limit=1, ttl=30)
    refused = await store.acquire(key, limit=1, ttl=30)

    await store.release(refused)
    assert not (await store.acquire(key, limit=1, ttl=30)).granted

    await store.release(held)
    await store.release(held)
    assert (await store.acquire(key, limit=1, ttl=30)).granted
    assert not (await store.acquire(key, limit=1, ttl=30)).granted


async def test_keys_do_not_share_slots(store: ConcurrencyStore) -> None:
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    assert (await store.acquire(first, limit=1, ttl=30)).granted

    assert (await store.acquire(second, limit=1, ttl=30)).granted


async def test_a_lease_never_released_stops_counting_after_its_ttl(store: ConcurrencyStore) -> None:
    key = uuid.uuid4().hex
    started = time.monotonic()
    assert (await store.acquire(key, limit=1, ttl=0.2)).granted  # its holder "dies" and never releases
    assert not (await store.acquire(key, limit=1, ttl=0.2)).granted

    deadline = started + 5
    while not (lease := await store.acquire(key, limit=1, ttl=0.2)).granted:
        assert time.monotonic() < deadline, "the abandoned lease never expired"
        await asyncio.sleep(0.02)

    assert lease.in_flight == 1
    assert time.monotonic() - started >= 0.1  # coarse: it did not expire at once


async def test_many_tasks_never_exceed_the_limit(store: ConcurrencyStore) -> None:
    key, limit = uuid.uuid4().hex, 5
    holding = peak = 0
    reported: list[int] = []

    async def request() -> None:
        nonlocal holding, peak
        # Polling is how a refused client retries; no event could tell it of a release by another process.
        while not (lease := await store.acquire(key, limit=limit, ttl=30)).granted:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        reported.append(lease.in_flight)
        holding += 1
        peak = max(peak, holding)
        await asyncio.sleep(0.05)
        holding -= 1
        await store.release(lease)

    await asyncio.wait_for(asyncio.gather(*(request() for _ in range(50))), timeout=60)

    assert len(reported) == 50
    assert peak <= limit
    assert max(reported) == limit  # the limit is reached, never passed
    assert (await store.acquire(key, limit=limit, ttl=30)).in_flight == 1  # every slot came back


async def test_processes_on_one_redis_share_one_limit(redis: Redis) -> None:
    other_process = Redis.from_url(REDIS_URL)
    try:
        here, there = RedisConcurrency(redis), RedisConcurrency(other_process)
        key = uuid.uuid4().hex
        mine = await here.acquire(key, limit=2, ttl=30)
        theirs = await there.acquire(key, limit=2, ttl=30)
        refused_here = await here.acquire(key, limit=2, ttl=30)
        refused_there = await there.acquire(key, limit=2, ttl=30)
        await there.release(theirs)
        after_release = await here.acquire(key, limit=2, ttl=30)
    finally:
        await other_process.aclose()

    assert [mine.granted, theirs.granted, refused_here.granted, refused_there.granted] == [True, True, False, False]
    assert refused_there.in_flight == 2
    assert after_release.granted


async def test_redis_keys_are_prefixed_and_expire_with_their_longest_lease(redis: Redis) -> None:
    store = RedisConcurrency(redis)
    key = uuid.uuid4().hex
    await store.acquire(key, limit=5, ttl=20)
    await store.acquire(key, limit=5, ttl=2)

    ttl_ms = await redis.pttl("tenantry:cc:" + key)

    assert 2000 < ttl_ms <= 20000


async def test_redis_errors_reach_the_caller_when_redis_is_unreachable() -> None:
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    store = RedisConcurrency(unreachable)
    try:
        with pytest.raises(RedisError):
            await store.acquire("api", limit=5, ttl=30)
        with pytest.raises(RedisError):
            await store.release(Lease("api", uuid.uuid4().hex, granted=True, in_flight=1, limit=5))
    finally:
        await unreachable.aclose()


async def test_an_unreachable_redis_is_not_asked_to_release_a_refused_lease() -> None:
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    try:
        await RedisConcurrency(unreachable).release(Lease("api", "x", granted=False, in_flight=5, limit=5))
    finally:
        await unreachable.aclose()
