"""Many limiter calls, one Redis round trip: commands submitted during one turn of the event loop are sent
together as one pipeline.

Under load, every request asks Redis two or three small things (its budgets, a lease); sent one by one
each costs a full round trip and redis-py's per-call overhead. Gathered per loop turn they cost one
pipeline for all the requests that arrived together. A command's answer (or the ``RedisError`` of the
pipeline) comes back on its own future, so each caller still decides what an error means for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError


class RedisBatcher:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[tuple[AsyncScript | None, tuple[Any, ...], asyncio.Future[Any] | None]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def script(self, source: str) -> AsyncScript:
        return self.redis.register_script(source)

    def run(self, script: AsyncScript, key: str, *args: Any) -> asyncio.Future[Any]:
        """EVALSHA ``script`` on ``key`` in the next pipeline; the future holds its reply."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit(script, (key, *args), future)
        return future

    def fire(self, *command: Any) -> None:
        """Send a plain command in the next pipeline, with no one waiting for it (a lease's release)."""
        self._submit(None, command, None)

    def _submit(self, script: AsyncScript | None, args: tuple[Any, ...], future: asyncio.Future[Any] | None) -> None:
        self._pending.append((script, args, future))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._pending, self._scheduled = self._pending, [], False
        task = asyncio.create_task(self._send(batch))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[AsyncScript | None, tuple[Any, ...], asyncio.Future[Any] | None]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for script, args, _ in batch:
            if script is None:
                pipe.execute_command(*args)
            else:
                pipe.evalsha(script.sha, 1, *args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            for _, _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
            return
        for (script, args, future), reply in zip(batch, replies, strict=True):
            if future is None or future.done():
                continue
            if isinstance(reply, NoScriptError) and script is not None:  # Redis restarted: load it again
                await self._retry(script, args, future)
            elif isinstance(reply, ResponseError | RedisError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _retry(self, script: AsyncScript, args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        try:
            future.set_result(await script(keys=[args[0]], args=list(args[1:])))
        except RedisError as exc:
            future.set_exception(exc)

    async def close(self) -> None:
        """Wait for the pipelines in flight (releases fired just before shutdown)."""
        if self._pending:
            self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
