"""Many limiter calls, one Redis round trip: commands submitted during one turn of the event loop are sent
together in one write, and their replies read back in order.

Under load, every request asks Redis something small (its budgets and lease, then a release); sent one by
one each costs a full round trip and redis-py's per-call overhead. Gathered per loop turn they cost one
round trip for all the requests that arrived together. A command's answer (or the error of its batch)
comes back on its own future, so each caller still decides what an error means for it.

redis-py's pipeline spends tens of microseconds per command here (its encoder for every word, a timeout
context for every reply, observability hooks), most of the cost of commands this small: the batcher writes
the Redis protocol itself and reads the replies off connections of its own, made like the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - a redis-py without it: every reply is read through the connection
    NOT_ENOUGH_DATA = object()
try:
    from hiredis import PushNotification

    _PUSH: tuple[type[Any], ...] = (PushNotification,)
except ImportError:  # pragma: no cover - no hiredis, or one before 3.2 (which had no push type)
    _PUSH = ()


def _word(word: Any) -> bytes:
    """One word in the Redis protocol (RESP): str as UTF-8, numbers by their repr, bytes as they are."""
    data = word.encode() if isinstance(word, str) else word if isinstance(word, bytes) else repr(word).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _pack(*words: Any) -> bytes:
    """Words in the Redis protocol, without the count that heads a command."""
    return b"".join(map(_word, words))


@dataclass(frozen=True, slots=True)
class Call:
    """A command packed ahead but for one word that changes from call to call (a key, a lease id): a request
    of a kind seen before costs a concatenation to send."""

    head: bytes  # the command's count, then every word before the one given with each call, packed
    tail: bytes  # every word after it, packed
    script: AsyncScript | None  # for a script call: to run it again if Redis has forgotten it
    keys: int
    before: tuple[Any, ...]  # a script's keys and arguments (or a command's words) around the given word
    after: tuple[Any, ...]

    @classmethod
    def evalsha(cls, script: AsyncScript, keys: int, before: Sequence[Any], after: Sequence[Any] = ()) -> Call:
        """EVALSHA of ``script`` with ``keys`` keys, its words being ``before``, then the word given with
        each call, then ``after``."""
        count = len(before) + 1 + len(after) + 3
        head = b"*%d\r\n" % count + _pack("EVALSHA", script.sha, keys, *before)
        return cls(head, _pack(*after), script, keys, tuple(before), tuple(after))

    @classmethod
    def command(cls, *before: Any) -> Call:
        """A plain command: ``before``, then the word given with each call."""
        return cls(b"*%d\r\n" % (len(before) + 1) + _pack(*before), b"", None, 0, before, ())


# What to send (a call and its word) and the future waiting for the reply (None when no one waits).
_Command = tuple[Call, Any, asyncio.Future[Any] | None]


class RedisBatcher:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[_Command] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Connections of the batcher's own, made with the client's settings: one per batch in flight, free of
        # the pool's per-checkout work (a lock, a readiness check, observability hooks).
        self._idle: list[AbstractConnection] = []
        self._timeout: float | None = None

    def script(self, source: str) -> AsyncScript:
        return self.redis.register_script(source)

    def run(self, script: AsyncScript, keys: int, words: Sequence[Any]) -> asyncio.Future[Any]:
        """EVALSHA ``script`` in the next batch, ``words`` being its first ``keys`` keys and then its
        arguments; the future holds its reply."""
        return self.call(Call.evalsha(script, keys, words[:-1]), words[-1])

    def call(self, call: Call, word: Any) -> asyncio.Future[Any]:
        """Send ``call`` with ``word`` in the next batch; the future holds its reply."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit((call, word, future))
        return future

    def fire(self, call: Call, word: Any) -> None:
        """Send ``call`` with ``word`` in the next batch, with no one waiting for it (a lease's release)."""
        self._submit((call, word, None))

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
        packed: list[bytes] = []
        for call, word, _ in batch:  # _word() written out for the usual str word: two commands per request
            data = word.encode() if type(word) is str else word if type(word) is bytes else repr(word).encode()
            packed += (call.head, b"$%d\r\n" % len(data), data, b"\r\n", call.tail)
        try:
            replies = await self._exchange(b"".join(packed), len(batch))
        except (RedisError, OSError, TimeoutError) as exc:
            error = exc if isinstance(exc, RedisError) else RedisError(repr(exc))
            for *_, future in batch:
                if future is not None and not future.done():
                    future.set_exception(error)
            return
        for (call, word, future), reply in zip(batch, replies, strict=True):
            if future is None or future.done():
                continue
            if isinstance(reply, NoScriptError) and call.script is not None:  # Redis restarted: load it again
                await self._retry(call.script, call.keys, (*call.before, word, *call.after), future)
            elif isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _exchange(self, packed: bytes, count: int) -> list[Any]:
        """Write ``packed`` (``count`` commands) on a connection of the batcher's own and read their replies,
        an error reply in its place; the connection is dropped on any other failure (its replies may be out
        of step with the next writer's)."""
        connection = self._idle.pop() if self._idle else self._connection()
        try:
            async with asyncio.timeout(self._timeout) if self._timeout else contextlib.nullcontext():
                if not connection.is_connected:
                    await connection.connect()  # type: ignore[no-untyped-call]
                await connection.send_packed_command(packed, check_health=False)
                hiredis = _hiredis(connection)
                if hiredis is not None:
                    replies = await _read_hiredis(*hiredis, count)
                else:
                    replies = []
                    for _ in range(count):
                        try:
                            replies.append(await connection.read_response())
                        except ResponseError as exc:
                            replies.append(exc)
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        finally:
            self._idle.append(connection)
        return replies

    def _connection(self) -> AbstractConnection:
        made: AbstractConnection = self.redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        # The client's socket timeout applies once to each whole exchange (above), not to every write and
        # every reply, for each of which redis-py would otherwise start a timer (a task, for a write).
        self._timeout = made.socket_timeout
        made.socket_timeout = None
        return made

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
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect()


def _hiredis(connection: AbstractConnection) -> tuple[Any, asyncio.StreamReader] | None:
    """The connection's hiredis reader and its socket's stream, when it reads replies through hiredis (redis-py's
    choice when hiredis is installed): the batcher then takes its replies from there itself. Through
    ``read_response`` each reply cost three coroutines and redis-py's checks (a timeout, a host string for
    errors, push messages), several microseconds for replies of a few bytes, as many as there are requests."""
    parser = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    stream = getattr(connection, "_reader", None)
    if type(parser).__name__ != "_AsyncHiredisParser" or reader is None or not isinstance(stream, asyncio.StreamReader):
        return None
    return reader, stream


async def _read_hiredis(reader: Any, stream: asyncio.StreamReader, count: int) -> list[Any]:
    """``count`` replies, in order, an error reply as its exception (as redis-py's parser gives them)."""
    replies: list[Any] = []
    gets = reader.gets
    while len(replies) < count:
        reply = gets()
        if reply is NOT_ENOUGH_DATA:
            data = await stream.read(65536)
            if not data:
                raise RedisConnectionError("Connection closed by server.")
            reader.feed(data)
        elif isinstance(reply, RedisConnectionError):
            raise reply
        elif isinstance(reply, _PUSH):  # RESP3: no one here subscribed to anything; not a reply
            continue
        else:
            replies.append(reply)
    return replies
