"""Many limiter calls, one Redis round trip: commands submitted during one turn of the event loop are sent
together as one pipeline.

Under load, every request asks Redis two or three small things (its budgets, a lease); sent one by one
each costs a full round trip and redis-py's per-call overhead. Gathered per loop turn they cost one
pipeline for all the requests that arrived together. A command's answer (or the ``RedisError`` of the
pipeline) comes back on its own future, so each caller still decides what an error means for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError

# What to send: a script (or None for a plain command), its number of keys, its keys and arguments (or
# the command's words), and the future waiting for the reply (None when no one waits).
_Command = tuple[AsyncScript | None, int, Sequence[Any], asyncio.Future[Any] | None]


class RedisBatcher:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[_Command] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def script(self, source: str) -> AsyncScript:
        return self.redis.register_script(source)

    def run(self, script: AsyncScript, keys: int, words: Sequence[Any]) -> asyncio.Future[Any]:
        """EVALSHA ``script`` in the next pipeline, ``words`` being its first ``keys`` keys and then its
        arguments; the future holds its reply."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit((script, keys, words, future))
        return future

    def fire(self, *command: Any) -> None:
        """Send a plain command in the next pipeline, with no one waiting for it (a lease's release)."""
        self._submit((None, 0, command, None))

    def _submit(self, command: _Command) -> None:
        self._pending.append(command)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._pending, self._scheduled = self._pending, [], False
        task = asyncio.create_task(self._send(batch))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Command]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for script, keys, words, _ in batch:
            if script is None:
                pipe.execute_command(*words)
            else:
                pipe.evalsha(script.sha, keys, *words)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            for *_, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
            return
        for (script, keys, words, future), reply in zip(batch, replies, strict=True):
            if future is None or future.done():
                continue
            if isinstance(reply, NoScriptError) and script is not None:  # Redis restarted: load it again
                await self._retry(script, keys, words, future)
            elif isinstance(reply, ResponseError | RedisError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _retry(self, script: AsyncScript, keys: int, words: Sequence[Any], future: asyncio.Future[Any]) -> None:
        try:
            future.set_result(await script(keys=list(words[:keys]), args=list(words[keys:])))
        except RedisError as exc:
            future.set_exception(exc)

    async def close(self) -> None:
        """Wait for the pipelines in flight (releases fired just before shutdown)."""
        if self._pending:
            self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
