"""A latency probe: one request at a time on a fixed beat, from its own thread.

It answers "how long does a cheap request wait while the server is busy with something else?".
Requests go one after the other (never more than one in flight), one every ``interval`` seconds.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import httpx


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latencies of the probe's successful requests, in milliseconds."""

    count: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, latencies_ms: list[float], *, errors: int) -> LatencySummary:
        ordered = sorted(latencies_ms)
        if not ordered:
            return cls(0, errors, math.nan, math.nan, math.nan)
        return cls(len(ordered), errors, _percentile(ordered, 50), _percentile(ordered, 99), ordered[-1])

    def as_dict(self) -> dict[str, float | None]:
        return {
            "count": self.count,
            "errors": self.errors,
            "p50_ms": _rounded(self.p50_ms),
            "p99_ms": _rounded(self.p99_ms),
            "max_ms": _rounded(self.max_ms),
        }


def _rounded(ms: float) -> float | None:
    return None if math.isnan(ms) else round(ms, 3)


def _percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


class LatencyProbe:
    """Sends ``GET url`` every ``interval`` seconds while the ``with`` block runs."""

    def __init__(self, url: str, *, interval: float = 0.02, timeout: float = 2.0) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self._latencies_ms: list[float] = []
        self._errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-probe", daemon=True)

    def __enter__(self) -> LatencyProbe:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 1)

    def summary(self) -> LatencySummary:
        return LatencySummary.of(list(self._latencies_ms), errors=self._errors)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            next_beat = time.perf_counter()
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self._latencies_ms.append((time.perf_counter() - started) * 1000)
                else:
                    self._errors += 1
                # A late answer moves the beat instead of being made up for with a burst.
                next_beat = max(next_beat + self.interval, time.perf_counter())
                self._stop.wait(next_beat - time.perf_counter())
