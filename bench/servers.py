"""Server processes under load: started on a free loopback port, awaited, and always stopped.

A ``Server`` is a context manager. Leaving it, normally or by an exception, sends SIGTERM to the
process group it started and SIGKILL if that group has not gone within a few seconds, so a failed
benchmark never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class ServerFailedError(RuntimeError):
    """A server exited or did not answer ``/healthz`` in time; the message ends with its log."""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which CPU the server and the load generator run on, when ``taskset`` can keep them apart.

    On a small machine a load generator sharing the server's core measures the scheduler, not the
    server: pinning gives each its own core, so a figure is the server's own ceiling on one core.
    """

    server_cpu: int | None
    load_cpu: int | None
    description: str

    @classmethod
    def detect(cls) -> Pinning:
        """Pin the server to the first CPU this process may use and the load to the second, if possible."""
        cpus = sorted(os.sched_getaffinity(0))
        if shutil.which("taskset") is None:
            return cls(None, None, "not pinned (taskset is not installed)")
        if len(cpus) < 2:
            return cls(None, None, "not pinned (only one CPU)")
        return cls(cpus[0], cpus[1], f"server pinned to CPU {cpus[0]}, wrk to CPU {cpus[1]}")

    @classmethod
    def none(cls, reason: str) -> Pinning:
        return cls(None, None, f"not pinned ({reason})")

    @property
    def is_used(self) -> bool:
        return self.server_cpu is not None

    def server(self, argv: Sequence[str]) -> list[str]:
        return _taskset(self.server_cpu, argv)

    def load(self, argv: Sequence[str]) -> list[str]:
        return _taskset(self.load_cpu, argv)


def _taskset(cpu: int | None, argv: Sequence[str]) -> list[str]:
    return list(argv) if cpu is None else ["taskset", "-c", str(cpu), *argv]


class Server:
    """One server process listening on ``127.0.0.1:port``, ready once ``GET /healthz`` answers 200."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id (taskset execs the server, so it is the server's own)."""
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running.")
        return self._process.pid

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the process and wait until it answers. Raises ``ServerFailedError`` (after stopping it)."""
        with self.log_path.open("wb") as log:
            # A session of its own, so that stop() can signal every process the server spawned.
            self._process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(base_url=self.base_url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    raise ServerFailedError(
                        f"{self.name} exited with code {self._process.returncode}.{self._log_tail()}"
                    )
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise ServerFailedError(
            f"{self.name} did not answer GET /healthz within {self.startup_timeout:.0f} s.{self._log_tail()}"
        )

    def stop(self) -> None:
        """Terminate the process group (uvicorn workers included); kill it if still there after ``STOP_TIMEOUT`` s."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"\n--- last lines of {self.log_path} ---\n{tail}" if tail else ""


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)
