"""Load shedding: refuse less important requests at once (503) while this process is overloaded.

Two signals say "overloaded": event-loop lag (the loop is busier than it can keep up with, so every
request admitted now waits behind the backlog) and the number of requests in flight. Low-priority work
is refused first (past ``lag_soft`` or 80 % of ``max_in_flight``), normal work next (past ``lag_hard``
or at ``max_in_flight``); critical work (health checks, login, billing webhooks) is always admitted.
Answering 503 costs almost nothing, and it keeps latency bounded for the requests that are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from enum import IntEnum

from prometheus_client import Counter, Gauge

# Module level, so registered once per process whatever the number of shedders (prometheus_client's
# registry is global and refuses a second metric of the same name).
REQUESTS_SHED = Counter("tenantry_requests_shed", "Requests refused by the load shedder.", ["priority"])
EVENT_LOOP_LAG = Gauge("tenantry_event_loop_lag_seconds", "Smoothed event-loop lag seen by the load shedder.")

# How fast the measured lag falls back once the loop keeps up again (time constant, seconds): slow enough
# that the backlog a stall left behind drains before normal traffic is let back in, fast enough that a
# single hiccup does not shed for long.
_DECAY_SECONDS = 0.5


class Priority(IntEnum):
    CRITICAL = 0
    NORMAL = 1
    LOW = 2


_SHED_BY_PRIORITY = {priority: REQUESTS_SHED.labels(priority=priority.name.lower()) for priority in Priority}
_CRITICAL, _LOW = Priority.CRITICAL, Priority.LOW  # a module global is found faster than an enum member


class LoadShedder:
    """Admission decisions in O(1) from an in-flight count and a background measure of event-loop lag.

    The lag follows the loop's lateness like an envelope: it jumps up to a late wake-up at once and
    decays exponentially while the loop keeps time. A stall yields a single late sample (the monitor
    cannot wake during it), so averaging that sample in would hide the very stall shedding exists for.
    While a wake-up is overdue, the overdue time counts as lag too, so requests that queued up behind a
    stall are judged by it even if they run before the monitor does.
    """

    def __init__(
        self, *, max_in_flight: int = 1000, lag_soft: float = 0.1, lag_hard: float = 0.3, interval: float = 0.05
    ) -> None:
        if max_in_flight < 1 or interval <= 0 or not 0 < lag_soft <= lag_hard:
            raise ValueError("need max_in_flight >= 1, interval > 0 and 0 < lag_soft <= lag_hard")
        self.max_in_flight = max_in_flight
        self.lag_soft = lag_soft
        self.lag_hard = lag_hard
        self.interval = interval
        self._low_bound = 0.8 * max_in_flight
        # Requests in flight: counted by enter() and leave(), or directly by the rate-limit middleware, which
        # counts every request and saves the two calls.
        self.in_flight = 0
        self._lag = 0.0
        self._wake_at: float | None = None  # when the monitor should next wake (monotonic), while it runs
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start measuring event-loop lag on the running loop (a no-op if already started)."""
        if self._task is None:
            self._task = asyncio.create_task(self._monitor(), name="tenantry-load-shedder")

    async def stop(self) -> None:
        """Stop measuring; the last lag stays as it was."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._wake_at = None

    async def _monitor(self) -> None:
        last = time.monotonic()
        while True:
            self._wake_at = wake_at = last + self.interval
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self._observe(max(0.0, now - wake_at), now - last)
            last = now

    def _observe(self, late: float, elapsed: float) -> None:
        if late >= self._lag:
            self._lag = late
        else:
            self._lag += (late - self._lag) * (1 - math.exp(-elapsed / _DECAY_SECONDS))
        EVENT_LOOP_LAG.set(self._lag)

    @property
    def lag(self) -> float:
        """Event-loop lag in seconds: the smoothed measure, or how overdue the monitor is if that is more."""
        if self._wake_at is None:
            return self._lag
        return max(self._lag, time.monotonic() - self._wake_at)

    @property
    def level(self) -> int:
        """0: all admitted; 1: low priority refused; 2: normal priority refused too."""
        lag = self.lag
        if lag > self.lag_hard or self.in_flight >= self.max_in_flight:
            return 2
        if lag > self.lag_soft or self.in_flight > self._low_bound:
            return 1
        return 0

    def admit(self, priority: Priority, now: float | None = None) -> bool:
        """Whether to serve a request of ``priority`` now (``now`` on the monotonic clock, if already read);
        ``False`` means answer 503 at once."""
        if priority is _CRITICAL:
            return True
        # ``level`` worked out inline (asked before every request): low priority needs level 0, normal below 2.
        lag = self._lag
        if self._wake_at is not None:
            overdue = (time.monotonic() if now is None else now) - self._wake_at
            if overdue > lag:
                lag = overdue
        if priority is _LOW:
            if lag <= self.lag_soft and self.in_flight <= self._low_bound:
                return True
        elif lag <= self.lag_hard and self.in_flight < self.max_in_flight:
            return True
        _SHED_BY_PRIORITY[priority].inc()
        return False

    def enter(self) -> None:
        """Count a request as in flight; pair with :meth:`leave` (or use :meth:`track`)."""
        self.in_flight += 1

    def leave(self) -> None:
        """Count a request as finished."""
        self.in_flight -= 1

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the enclosed block as one request in flight, however it ends."""
        self.enter()
        try:
            yield
        finally:
            self.leave()
