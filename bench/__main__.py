"""``python -m bench``: run the benchmarks, print a table of figures and ratios, save JSON.

Each benchmark writes its own ``bench/results/<name>.json``, so running one (``--only limits``) leaves
the other benchmarks' last figures where they were.

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

RESULTS = Path(__file__).resolve().parent / "results"
NOTES = {
    "me": "GET /v1/me, GET /healthz and GET /users/me: {pinning}.",
    "login": "POST /v1/auth/login storm: server not pinned, its 2 argon2 threads need both cores.",
}


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
    pinning = Pinning.detect()
    names = [arguments.only] if arguments.only else list(BENCHMARKS)
    about = machine.describe()
    failed = False
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-") as workdir:
        for name in names:
            report = Report(suite=name, duration=arguments.duration, machine=about)
            try:
                BENCHMARKS[name](Run(arguments.duration, wrk_path, pinning, Path(workdir), report, console))
            except Exception as exc:  # report and go on with the next benchmark
                report.errors[name] = f"{type(exc).__name__}: {exc}"
            if name in NOTES:
                report.notes.append(NOTES[name].format(pinning=pinning.description))
            report.print(console)
            path = RESULTS / f"{name}.json"
            report.write(path)
            console.print(f"Results written to {path}", highlight=False)
            failed = failed or bool(report.errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
