"""One webhook request: signed, bounded in time and in what is read back, never following a redirect.

Whatever happens (an answer, a timeout, a refused or unsafe address) becomes an ``Outcome`` that
the attempt log keeps; nothing here raises for the receiver's behaviour.

Time limits are kept by ``Deadlines``, one timer for every request in flight, rather than by a timer
per request (aiohttp's ``timeout=``, or ``asyncio.timeout``): in a microbenchmark against the bench's
receiver, a timer made and cancelled for each request cost about 10 µs of CPU a request on uvloop, three
times what signing it costs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import NamedTuple

import aiohttp

from tenantry import __version__
from tenantry.core.clock import utcnow
from tenantry.webhooks.addresses import UnsafeAddress
from tenantry.webhooks.signing import Signer

USER_AGENT = f"Tenantry-Webhooks/{__version__}"
MAX_RETRY_AFTER = 24 * 3600.0  # a receiver asking for more is asked again in a day


class Request(NamedTuple):
    """What one request sends (a tuple: made once per attempt, and a frozen dataclass's fields cost a
    microsecond to set)."""

    url: str
    msg_id: str
    body: bytes
    signer: Signer
    headers: Mapping[str, str]  # the endpoint's own, checked at registration not to shadow ours


@dataclass(slots=True)
class Outcome:
    at: datetime
    status: int | None
    duration_ms: int
    error: str | None = None
    body: str | None = None
    retry_after: float | None = None  # seconds, from a 429 or 503's Retry-After

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, (when - utcnow()).total_seconds()), MAX_RETRY_AFTER)


async def _read(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether that was all of it."""
    data = bytearray()
    while len(data) < limit:
        chunk = await response.content.read(limit - len(data))
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), response.content.at_eof()


class _Bound:
    """A request in flight: its task, and when it must have ended."""

    __slots__ = ("deadline", "expired", "finished", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.expired = False  # cancelled for running past its deadline
        self.finished = False


class Deadlines:
    """Ends every request that runs past ``limit`` seconds, checking every ``tick`` seconds while any is in flight.

    A request runs past its deadline by a ``tick`` at most. It is ended as ``asyncio.timeout`` ends
    a block: its task is cancelled, and the cancellation is taken back (``uncancel``) once it has
    unwound the request, so a cancellation from elsewhere (a shutdown) still goes through. Every
    request has the same limit, so deadlines fall in the order requests start: the oldest in flight
    is the first to expire, and one finished is dropped once all before it have finished too.
    """

    def __init__(self, limit: float, *, tick: float = 0.1) -> None:
        self.limit = limit
        self.tick = tick
        self._bounds: deque[_Bound] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Requests started and not yet dropped (finished ones wait for older ones to finish)."""
        return len(self._bounds)

    def start(self) -> _Bound:
        """Bound the current task's request, from now; call ``finish`` with what this returns when it ends."""
        task = asyncio.current_task()
        assert task is not None, "a request runs in a task"
        loop = task.get_loop()
        bound = _Bound(task, loop.time() + self.limit)
        self._bounds.append(bound)
        if self._timer is None:
            self._timer = loop.call_at(bound.deadline + self.tick, self._expire)
        return bound

    def finish(self, bound: _Bound) -> bool:
        """Mark ``bound``'s request ended. Whether it was ended for running out of time, and for that alone:
        then its cancellation is taken back (one from elsewhere as well, a shutdown, still stands)."""
        bound.finished = True
        bounds = self._bounds
        while bounds and bounds[0].finished:
            bounds.popleft()
        return bound.expired and bound.task.uncancel() == 0

    def _expire(self) -> None:
        self._timer = None
        bounds, now = self._bounds, asyncio.get_running_loop().time()
        for bound in bounds:
            if bound.deadline > now:
                break
            if not bound.finished and not bound.expired:
                bound.expired = True
                bound.task.cancel()
        while bounds and bounds[0].finished:
            bounds.popleft()
        waiting = next((b for b in bounds if not b.expired), None)
        if waiting is not None:
            self._timer = asyncio.get_running_loop().call_at(max(waiting.deadline, now) + self.tick, self._expire)


def _error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"No answer within {timeout:g} s."
    cause: BaseException | None = exc
    while cause is not None:  # aiohttp wraps the resolver's refusal in its own connector errors
        if isinstance(cause, UnsafeAddress):
            return f"Refused: {cause}"
        cause = cause.__cause__ or getattr(cause, "os_error", None)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"Could not connect: {exc.os_error.strerror or exc.os_error}"
    return f"{type(exc).__name__}: {exc}"


async def send(session: aiohttp.ClientSession, request: Request, *, deadlines: Deadlines, body_limit: int) -> Outcome:
    """POST ``request`` once, within ``deadlines.limit`` seconds, and say how it went."""
    at = utcnow()
    started = time.perf_counter()
    timestamp = int(time.time())
    headers = {
        **request.headers,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": request.msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": request.signer.sign(msg_id=request.msg_id, timestamp=timestamp, body=request.body),
    }
    bound = deadlines.start()  # the whole exchange: connecting, sending, and reading the answer
    try:
        try:
            async with session.post(request.url, data=request.body, headers=headers, allow_redirects=False) as response:
                body, complete = await _read(response, body_limit)
                if not complete:
                    response.close()  # never drain the rest of a huge answer: drop the connection
                status, wait = response.status, None
                if status in (429, 503):
                    wait = retry_after(response.headers.get("retry-after"))
        finally:
            timed_out = deadlines.finish(bound)
    # ValueError: a request that cannot be made (a header value or a host name no client may send) is a
    # failed attempt like any other, not a crash that would leave its delivery pending forever.
    except (asyncio.CancelledError, aiohttp.ClientError, OSError, ValueError) as exc:
        if isinstance(exc, asyncio.CancelledError) and not timed_out:
            raise  # not for its deadline: a shutdown
        failure = _error(TimeoutError() if timed_out else exc, deadlines.limit)
        return Outcome(at, None, _elapsed_ms(started), error=failure[:500])
    if timed_out:  # its cancellation was swallowed on the way out: the answer came past the deadline all the same
        return Outcome(at, None, _elapsed_ms(started), error=_error(TimeoutError(), deadlines.limit))
    error = (
        f"Redirects are not followed (to {response.headers.get('location', '?')[:200]})."
        if 300 <= status < 400
        else None
    )
    # PostgreSQL's text holds no NUL: one in an answer would fail the whole batch of results it is written with.
    text = body.decode("utf-8", "replace").replace("\x00", "\ufffd") if body else None
    return Outcome(at, status, _elapsed_ms(started), error=error, body=text, retry_after=wait)


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
