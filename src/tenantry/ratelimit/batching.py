"""Many limiter calls, one Redis round trip: commands submitted during one turn of the event loop are sent
together in one write, and their replies read back in order.

Under load, every request asks Redis something small (its budgets and lease, then a release); sent one by
one each costs a full round trip and redis-py's per-call overhead. Gathered per loop turn they cost one
round trip for all the requests that arrived together. A command's answer (or the error of its batch)
comes back on its own future, so each caller still decides what an error means for it.

redis-py's pipeline spends tens of microseconds per command here (its encoder for every word, a timeout
context for every reply, observability hooks), most of the cost of commands this small: the batcher writes
the Redis protocol itself on a connection of its own, made like the client's, and takes the replies from
the connection's transport as they arrive.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - a redis-py without it: the batcher makes its readers with its own
    NOT_ENOUGH_DATA = object()
try:
    from hiredis import PushNotification

    _PUSH: tuple[type[Any], ...] = (PushNotification,)
except ImportError:  # pragma: no cover - a hiredis before 3.2 (which had no push type)
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
    """Sends the commands of one loop turn in one write on a connection of its own, made like the client's
    (one handshake, then free of the pool's per-checkout work: a lock, a readiness check, observability hooks).

    The connection's replies are taken as they arrive, by the transport's callback itself (:class:`_Replies`),
    each by the oldest command still waiting for one: a batch costs one write and no task, no coroutine and
    no timer of its own, and a batch sent while an earlier one is unanswered follows it on the same
    connection. The client's socket timeout, if it has one, is how long Redis may leave the commands
    waiting without answering any; then they fail and the connection is dropped.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[_Command] = []
        self._scheduled = False
        self._replies: _Replies | None = None  # the open connection's end, once connected
        self._held: list[list[_Command]] = []  # batches waiting for a connection
        self._connecting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # scripts sent again after NOSCRIPT

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
        replies = self._replies
        if replies is not None and replies.is_open:
            replies.send(batch)
            return
        self._held.append(batch)
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        """Open a connection (the client's handshake: password, database, protocol), then send the batches held
        meanwhile; if it cannot be opened, they fail with the error."""
        connection: AbstractConnection = self.redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
            replies = _Replies.take_over(connection, self)
        except BaseException as exc:  # cancelled too: no batch held is left waiting forever
            held, self._held, self._connecting = self._held, [], None
            error = exc if isinstance(exc, RedisError) else RedisConnectionError(repr(exc))
            for batch in held:
                _fail(batch, error)
            await connection.disconnect(nowait=True)
            if not isinstance(exc, RedisError | OSError | TimeoutError):
                raise
            return
        held, self._held, self._connecting, self._replies = self._held, [], None, replies
        for batch in held:
            replies.send(batch)

    def _answer(self, call: Call, word: Any, future: asyncio.Future[Any], reply: Any) -> None:
        """Hand ``reply`` to ``future``; a script Redis has forgotten (it restarted) is loaded and run again."""
        if isinstance(reply, NoScriptError) and call.script is not None:
            task = asyncio.create_task(self._retry(call.script, call.keys, (*call.before, word, *call.after), future))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)
        elif isinstance(reply, RedisError):
            future.set_exception(reply)
        else:
            future.set_result(reply)

    async def _retry(self, script: AsyncScript, keys: int, words: Sequence[Any], future: asyncio.Future[Any]) -> None:
        try:
            result = await script(keys=list(words[:keys]), args=list(words[keys:]))
        except RedisError as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Wait for the commands in flight (releases fired just before shutdown), then close the connection."""
        if self._pending:
            self._flush()
        if self._connecting is not None:
            await asyncio.gather(self._connecting, return_exceptions=True)
        replies, self._replies = self._replies, None
        if replies is not None:
            await replies.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _fail(batch: Sequence[_Command], error: BaseException) -> None:
    for *_, future in batch:
        if future is not None and not future.done():
            future.set_exception(error)


class _Replies(asyncio.Protocol):
    """The batcher's end of its connection: what it writes, and its replies, read by hiredis as they arrive and
    handed out in order (an error reply to its own command only)."""

    def __init__(self, batcher: RedisBatcher, writer: asyncio.StreamWriter, reader: Any, timeout: float | None) -> None:
        self.batcher = batcher
        self.transport: asyncio.WriteTransport = writer.transport
        # Kept while the transport is open: a stream writer collected before its transport closes warns of it.
        self._writer = writer
        self.reader = reader
        self.timeout = timeout
        self.waiting: deque[_Command] = deque()  # sent, not yet answered, in the order sent
        self.is_open = True
        self._answered = False  # since the timer was set
        self._timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None

    @classmethod
    def take_over(cls, connection: AbstractConnection, batcher: RedisBatcher) -> _Replies:
        """Replies of ``connection`` (connected, its handshake done) go to a new ``_Replies`` from now on."""
        writer = getattr(connection, "_writer", None)
        if writer is None:
            raise RedisConnectionError("Redis connection without a stream")
        reader = _reader_of(connection)
        replies = cls(batcher, writer, reader, connection.socket_timeout)
        writer.transport.set_protocol(replies)
        # The socket is the batcher's now: the connection forgets it (and does not warn of it as unclosed).
        connection._writer = connection._reader = None
        return replies

    def send(self, batch: list[_Command]) -> None:
        packed: list[bytes] = []
        for call, word, _ in batch:  # _word() written out for the usual str word: two commands per request
            data = word.encode() if type(word) is str else word if type(word) is bytes else repr(word).encode()
            packed += (call.head, b"$%d\r\n" % len(data), data, b"\r\n", call.tail)
        self.waiting.extend(batch)
        self.transport.write(b"".join(packed))
        if self.timeout is not None and self._timer is None:
            self._answered = False
            self._timer = asyncio.get_running_loop().call_later(self.timeout, self._check)

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        reader.feed(data)
        self._answered = True
        try:
            while True:
                reply = reader.gets()
                if reply is NOT_ENOUGH_DATA:
                    break
                if isinstance(reply, _PUSH):  # RESP3: no one here subscribed to anything; not a reply
                    continue
                call, word, future = waiting.popleft()
                if future is not None and not future.done():
                    self.batcher._answer(call, word, future, reply)
        except Exception as exc:  # a protocol error, or more replies than commands: out of step, drop it
            self._lose(RedisConnectionError(f"Redis replies out of step: {exc!r}"))
            return
        if not waiting and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(RedisConnectionError("Connection closed by server." if exc is None else repr(exc)), abort=False)

    def _check(self) -> None:
        """The timeout ran out: if commands are waiting and none was answered meanwhile, give up on them."""
        self._timer = None
        if not self.waiting or not self.is_open:
            return
        if not self._answered:
            self._lose(RedisTimeoutError("Timeout reading from Redis"))
            return
        self._answered = False
        self._timer = asyncio.get_running_loop().call_later(self.timeout or 0.0, self._check)

    def _lose(self, error: RedisError, *, abort: bool = True) -> None:
        """Fail every command waiting, and close: a new connection is made for the next batch."""
        was_open, self.is_open = self.is_open, False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self.waiting = self.waiting, deque()
        _fail(waiting, error)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if abort and was_open:
            self.transport.abort()

    async def close(self) -> None:
        """Wait until every command sent is answered (or the connection is lost), then close."""
        if self.waiting and self.is_open:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        self.is_open = False
        if self._timer is not None:
            self._timer.cancel()
        self.transport.close()


def _reader_of(connection: AbstractConnection) -> Any:
    """The connection's hiredis reader (redis-py's choice when hiredis is installed, with its error classes and
    decoding), or a new one made alike."""
    parser = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if type(parser).__name__ == "_AsyncHiredisParser" and reader is not None:
        return reader
    kwargs: dict[str, Any] = {
        "protocolError": InvalidResponse,
        "replyError": BaseParser.parse_error,
        "notEnoughData": NOT_ENOUGH_DATA,
    }
    encoder = connection.encoder
    if encoder.decode_responses:
        kwargs.update(encoding=encoder.encoding, errors=encoder.encoding_errors)
    return hiredis.Reader(**kwargs)
