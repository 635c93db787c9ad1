"""In-process caches whose entries every process drops together.

What runs on every request (is this token's session still alive? who is this user?) is answered
from memory. Correctness then rests on invalidation: a change publishes the key it touched, and
every process drops it before serving its next request.

Two adapters carry the news between processes:
- ``FileInvalidation`` (embedded shape): processes on one machine share a data dir. A publisher
  replaces a small file there; every request ``stat``s it (about a microsecond) and, if it changed,
  clears the caches. Publications are rare (a logout, a password change), so clearing all is fine.
- ``RedisInvalidation`` (cluster shape): keys go out over Redis pub/sub and are dropped one by one.
  Redis writes a message to every subscriber's socket before PUBLISH returns, so the news is
  already waiting when the next request arrives. If the subscription breaks, caches are cleared
  and stay bypassed until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import orjson
import structlog
from redis.asyncio import Redis

log = structlog.get_logger(__name__)

K = TypeVar("K")
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entries first."""

    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class Invalidation(Protocol):
    """Tells every process which cached keys are stale."""

    version: int  # grows with every drop; a value read while it changed must not be cached

    def attach(self, cache: LRUCache[str, object]) -> None: ...

    def follow(self, cache_name: str, cache: LRUCache[str, object]) -> None:
        """Clear ``cache`` whenever any key of ``cache_name`` drops (its entries are built from those)."""
        ...

    def check(self) -> bool:
        """Apply news from other processes; returns whether the caches may be trusted now."""
        ...

    async def publish(self, cache_name: str, key: str) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _Caches:
    def __init__(self) -> None:
        self.caches: dict[str, LRUCache[str, object]] = {}
        self.followers: dict[str, list[LRUCache[str, object]]] = {}
        self.version = 0

    def attach(self, cache: LRUCache[str, object]) -> None:
        self.caches[cache.name] = cache

    def follow(self, cache_name: str, cache: LRUCache[str, object]) -> None:
        self.followers.setdefault(cache_name, []).append(cache)

    def drop(self, cache_name: str, key: str) -> None:
        self.version += 1
        cache = self.caches.get(cache_name)
        if cache is not None:
            cache.pop(key)
        for follower in self.followers.get(cache_name, ()):
            follower.clear()

    def clear_all(self) -> None:
        self.version += 1
        for cache in self.caches.values():
            cache.clear()


class FileInvalidation(_Caches):
    """Processes of one machine, told through a generation file under the data dir."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._seen: tuple[int, int] | None = None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def check(self) -> bool:
        stamp = self._stamp()
        if stamp != self._seen:
            self._seen = stamp
            self.clear_all()
        return True

    async def publish(self, cache_name: str, key: str) -> None:
        self.drop(cache_name, key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh file replaced atomically: a new inode, so even two changes within one clock tick show.
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(orjson.dumps([cache_name, key]))
        os.replace(temporary, self.path)
        # _seen is left as it was: the next check() sees the new stamp and clears this process's
        # caches too. Recording our own stamp here could swallow another process's publication
        # landing just after ours.

    async def start(self) -> None:
        self._seen = self._stamp()

    async def stop(self) -> None:
        return None


class RedisInvalidation(_Caches):
    """Processes anywhere, told through a Redis pub/sub channel."""

    CHANNEL = "tenantry:cache-invalidation"

    def __init__(self, redis: Redis) -> None:
        super().__init__()
        self.redis = redis
        self._healthy = False
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def check(self) -> bool:
        return self._healthy

    async def publish(self, cache_name: str, key: str) -> None:
        self.drop(cache_name, key)
        await self.redis.publish(self.CHANNEL, orjson.dumps([cache_name, key]))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="cache-invalidation")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.CHANNEL)
                    self.clear_all()  # whatever happened while we were not listening is unknown
                    self._healthy = True
                    self._ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            cache_name, key = orjson.loads(message["data"])
                            self.drop(cache_name, key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._healthy = False
                self.clear_all()
                log.warning("cache.invalidation.disconnected", error=repr(exc))
                await asyncio.sleep(1)
