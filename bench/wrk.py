"""Driving ``wrk``, the HTTP load generator, and reading its figures.

Every run gets a small Lua script whose ``done()`` prints the summary as one JSON line, so the
figures are read from numbers wrk computed rather than from its human-oriented text. A script may
also define ``request()`` to vary the requests (the login storm cycles through its users).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from bench.servers import Pinning

_MARKER = "BENCH_JSON "
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"duration_us":%.0f,"requests":%.0f,"connect_errors":%.0f,"read_errors":%.0f,"write_errors":%.0f,'
      .. '"status_errors":%.0f,"timeouts":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f}\\n',
    "__MARKER__", summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
""".replace("__MARKER__", _MARKER)
_INSTALL_TIMEOUT = 300.0


class WrkMissingError(RuntimeError):
    """wrk is not installed and this process may not install it."""


def require() -> str:
    """The path of ``wrk``, installed with apt-get first when missing and running as root.

    Raises ``WrkMissingError`` when it is missing and cannot be installed from here.
    """
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise WrkMissingError(
            "The benchmarks need wrk (https://github.com/wg/wrk). Install it, e.g. `sudo apt-get install -y wrk`."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    attempts = (["apt-get", "install", "-y", "wrk"], ["apt-get", "update"], ["apt-get", "install", "-y", "wrk"])
    for argv in attempts:
        subprocess.run(argv, env=env, check=False, timeout=_INSTALL_TIMEOUT, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
        if found:
            return found
    raise WrkMissingError("`apt-get install -y wrk` did not install wrk; install it by hand and run again.")


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What wrk saw during one run; latencies in milliseconds."""

    duration_s: float
    requests: int
    status_errors: int  # answers other than 2xx/3xx
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok_per_second(self) -> float:
        """Successful (2xx/3xx) answers per second."""
        return (self.requests - self.status_errors) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def problems(self) -> str:
        """A note on failed requests, empty when there were none."""
        parts = []
        if self.status_errors:
            parts.append(f"{self.status_errors} non-2xx")
        if self.socket_errors:
            parts.append(f"{self.socket_errors} socket errors")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "ok_per_second": round(self.ok_per_second, 1)}


def ok_per_second(*results: WrkResult) -> float:
    """Successful answers per second over several runs taken together."""
    seconds = sum(result.duration_s for result in results)
    return sum(result.requests - result.status_errors for result in results) / seconds if seconds > 0 else 0.0


def run(
    wrk: str,
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    headers: Sequence[str] = (),
    request_lua: str = "",
    pinning: Pinning,
) -> WrkResult:
    """Load ``url`` for ``duration`` seconds (rounded up to whole seconds, wrk's unit) and report."""
    seconds = max(1, math.ceil(duration))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as script:
        script.write(request_lua + _DONE)
        script.flush()
        argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
        for header in headers:
            argv += ["-H", header]
        argv += ["-s", script.name, url]
        completed = subprocess.run(
            pinning.load(argv), capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    return _parse(completed)


def _parse(completed: subprocess.CompletedProcess[str]) -> WrkResult:
    for line in completed.stdout.splitlines():
        if line.startswith(_MARKER):
            raw = json.loads(line.removeprefix(_MARKER))
            return WrkResult(
                duration_s=raw["duration_us"] / 1e6,
                requests=int(raw["requests"]),
                status_errors=int(raw["status_errors"]),
                socket_errors=int(raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]),
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
            )
    raise RuntimeError(
        f"wrk exited with code {completed.returncode} without a summary:\n{completed.stdout}\n{completed.stderr}"
    )


def lua_string(text: str) -> str:
    """``text`` as a Lua string literal (a long bracket, so JSON needs no escaping)."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"
