"""Cache invalidation between processes: the file stamp (embedded) and Redis pub/sub (cluster)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis

from tenantry.perf.cache import FileInvalidation, LRUCache, RedisInvalidation
from tests.conftest import REDIS_URL


def _cache_with(name: str, **entries: str) -> LRUCache[str, object]:
    cache: LRUCache[str, object] = LRUCache(name, 100)
    for key, value in entries.items():
        cache.put(key, value)
    return cache


def test_the_lru_cache_forgets_the_least_recently_used_first() -> None:
    cache: LRUCache[str, int] = LRUCache("c", 2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)

    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)


async def test_a_file_publication_clears_the_other_process_caches(tmp_path: Path) -> None:
    stamp = tmp_path / "generation"
    here, there = FileInvalidation(stamp), FileInvalidation(stamp)
    mine, theirs = _cache_with("s", a="1"), _cache_with("s", a="1", b="2")
    here.attach(mine)
    there.attach(theirs)
    await here.start()
    await there.start()
    there.check()
    theirs.put("a", "1")

    await here.publish("s", "a")
    assert there.check() is True

    assert mine.get("a") is None
    assert len(theirs) == 0


async def test_two_publications_in_one_clock_tick_are_both_seen(tmp_path: Path) -> None:
    stamp = tmp_path / "generation"
    publisher, reader = FileInvalidation(stamp), FileInvalidation(stamp)
    cache = _cache_with("s")
    reader.attach(cache)
    await reader.start()
    for key in ("a", "b"):
        cache.put(key, "v")
        await publisher.publish("s", key)
        reader.check()
        assert cache.get(key) is None


async def test_redis_publication_reaches_the_other_process(redis: Redis) -> None:
    here, there = RedisInvalidation(redis), RedisInvalidation(Redis.from_url(REDIS_URL))
    theirs = _cache_with("s")
    there.attach(theirs)
    await here.start()
    await there.start()
    try:
        theirs.put("a", "1")
        theirs.put("b", "2")
        version = there.version
        await here.publish("s", "a")
        for _ in range(100):
            if theirs.get("a") is None:
                break
            await asyncio.sleep(0.01)

        assert theirs.get("a") is None
        assert theirs.get("b") == "2"
        assert there.version > version
        assert there.check() is True
    finally:
        await here.stop()
        await there.stop()
        await there.redis.aclose()


async def test_without_a_redis_subscription_the_caches_are_not_trusted() -> None:
    broken = RedisInvalidation(Redis.from_url("redis://127.0.0.1:1/0"))
    cache = _cache_with("s", a="1")
    broken.attach(cache)

    assert broken.check() is False
    await broken.redis.aclose()
