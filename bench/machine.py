"""The machine the figures come from: its CPUs, and how busy other work keeps them.

On a two-core machine a test suite running next to the benchmark takes half of it, and every
figure drops. Ratios survive some of that (their baselines suffer too) but not all of it, since the
load comes and goes between two measurements; so every measurement is watched, and the report
names those that shared the machine.
"""

from __future__ import annotations

import os
import platform
import sys
from types import TracebackType
from typing import Any


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from the first line of /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def _process_ticks(pid: int | str, *, with_children: bool = False) -> int:
    """CPU time of a process (all its threads) in clock ticks; with its reaped children if asked."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name may hold spaces and parentheses: the fields start after the last ")".
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return utime + stime + (cutime + cstime if with_children else 0)


class CpuWatch:
    """How many CPUs' worth of work processes other than ours did while the ``with`` block ran.

    Ours are this process (its threads, and children it reaped, such as wrk) and the given server
    processes. The rest is background load that the figures measured in the block had to share with.
    """

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.background_cpus: float | None = None
        self._start: tuple[int, int, int] = (0, 0, 0)

    def _sample(self) -> tuple[int, int, int]:
        busy, total = _cpu_times()
        ours = _process_ticks("self", with_children=True) + sum(_process_ticks(pid) for pid in self.pids)
        return busy, total, ours

    def __enter__(self) -> CpuWatch:
        try:
            self._start = self._sample()
        except (OSError, ValueError, IndexError):
            self._start = (0, 0, 0)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            busy, total, ours = self._sample()
        except (OSError, ValueError, IndexError):
            return
        busy0, total0, ours0 = self._start
        if total0 and total > total0:
            cpus = os.cpu_count() or 1
            other = (busy - busy0) - (ours - ours0)
            self.background_cpus = max(0.0, other / (total - total0) * cpus)


def describe() -> dict[str, Any]:
    """What the JSON results say about the machine."""
    return {
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
