"""One webhook request: signed, bounded in time and in what is read back, never following a redirect.

Whatever happens (an answer, a timeout, a refused or unsafe address) becomes an ``Outcome`` that
the attempt log keeps; nothing here raises for the receiver's behaviour.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

import aiohttp

from tenantry import __version__
from tenantry.core.clock import utcnow
from tenantry.webhooks.addresses import UnsafeAddress
from tenantry.webhooks.signing import Signer

USER_AGENT = f"Tenantry-Webhooks/{__version__}"
MAX_RETRY_AFTER = 24 * 3600.0  # a receiver asking for more is asked again in a day


@dataclass(frozen=True, slots=True)
class Request:
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


async def send(session: aiohttp.ClientSession, request: Request, *, time_limit: float, body_limit: int) -> Outcome:
    """POST ``request`` once and say how it went."""
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
    try:
        # aiohttp's total timeout bounds the whole exchange: connecting, sending, and reading the answer.
        async with session.post(
            request.url, data=request.body, headers=headers, allow_redirects=False, timeout=_timeout(time_limit)
        ) as response:
            body, complete = await _read(response, body_limit)
            if not complete:
                response.close()  # never drain the rest of a huge answer: drop the connection
            status, wait = response.status, None
            if status in (429, 503):
                wait = retry_after(response.headers.get("retry-after"))
    # ValueError: a request that cannot be made (a header value or a host name no client may send) is a
    # failed attempt like any other, not a crash that would leave its delivery pending forever.
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        return Outcome(at, None, _elapsed_ms(started), error=_error(exc, time_limit)[:500])
    error = (
        f"Redirects are not followed (to {response.headers.get('location', '?')[:200]})."
        if 300 <= status < 400
        else None
    )
    # PostgreSQL's text holds no NUL: one in an answer would fail the whole batch of results it is written with.
    text = body.decode("utf-8", "replace").replace("\x00", "\ufffd") if body else None
    return Outcome(at, status, _elapsed_ms(started), error=error, body=text, retry_after=wait)


@functools.cache
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
