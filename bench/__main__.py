"""``python -m bench``: run the identity benchmarks, print a table of figures and ratios, save JSON.

Exits 0 whatever the figures are (a benchmark never fails on a time); 1 if a benchmark could not
run to the end (a server did not start, a request failed), 2 if wrk is missing and cannot be installed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from bench import machine, wrk
from bench.identity import BENCHMARKS as IDENTITY
from bench.identity import Run
from bench.ratelimit import bench_limits
from bench.report import Report
from bench.servers import Pinning
from bench.tenancy import bench_members
from bench.webhooks import bench_webhooks

BENCHMARKS = {**IDENTITY, "members": bench_members, "limits": bench_limits, "webhooks": bench_webhooks}

RESULTS = Path(__file__).resolve().parent / "results" / "identity.json"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        choices=sorted(BENCHMARKS),
        help="run one benchmark: me (and its peer), login, members, limits or webhooks",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per measurement, whole seconds for wrk (default 10)"
    )
    arguments = parser.parse_args(argv)
    if arguments.duration <= 0:
        parser.error("--duration must be positive")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    # Piped output (make, CI logs) would otherwise wrap the table at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=180)
    try:
        wrk_path = wrk.require()
    except wrk.WrkMissingError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    report = Report(suite="identity", duration=arguments.duration, machine=machine.describe())
    pinning = Pinning.detect()
    names = [arguments.only] if arguments.only else list(BENCHMARKS)
    if "me" in names:
        report.notes.append(f"GET /v1/me, GET /healthz and GET /users/me: {pinning.description}.")
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-") as workdir:
        run = Run(arguments.duration, wrk_path, pinning, Path(workdir), report, console)
        for name in names:
            try:
                BENCHMARKS[name](run)
            except Exception as exc:  # report and go on with the next benchmark
                report.errors[name] = f"{type(exc).__name__}: {exc}"
    if "login" in names:
        report.notes.append("POST /v1/auth/login storm: server not pinned, its 2 argon2 threads need both cores.")
    report.print(console)
    report.write(RESULTS)
    console.print(f"Results written to {RESULTS}", highlight=False)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
