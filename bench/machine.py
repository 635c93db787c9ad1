"""The machine the figures come from: its CPUs, and how busy other work keeps them.

On a two-core machine a test suite running next to the benchmark takes half of it, and every
figure drops. The ratios survive some of that (baselines suffer the same), but not all of it, so a
run measures the background load first and says so when it is not negligible.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

BUSY_THRESHOLD = 0.25  # CPUs' worth of other work that makes a run worth a warning


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


@dataclass(frozen=True, slots=True)
class Machine:
    """CPUs usable by this process, and the CPUs' worth of work others were doing just before the run."""

    usable_cpus: int
    background_cpus: float | None

    @classmethod
    def sample(cls, seconds: float = 1.0) -> Machine:
        """Watch the machine for ``seconds`` while this process sleeps."""
        usable = len(os.sched_getaffinity(0))
        try:
            busy0, total0 = _cpu_times()
            time.sleep(seconds)
            busy1, total1 = _cpu_times()
        except (OSError, ValueError, IndexError):
            return cls(usable, None)
        cpus = os.cpu_count() or usable
        share = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
        return cls(usable, share * cpus)

    @property
    def warning(self) -> str | None:
        if self.background_cpus is None or self.background_cpus < BUSY_THRESHOLD:
            return None
        return (
            f"Other processes were using {self.background_cpus:.1f} of {os.cpu_count()} CPUs when the run began: "
            "figures are lower and noisier than on a quiet machine."
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "cpus": os.cpu_count(),
            "usable_cpus": self.usable_cpus,
            "background_cpus_at_start": None if self.background_cpus is None else round(self.background_cpus, 2),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        }
