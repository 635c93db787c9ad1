"""Real ``tenantry`` processes for tests: servers started together and always stopped, and CLI runs.

A test takes a ``Fleet`` from a fixture, starts ``tenantry serve`` processes with it (they boot in
parallel, each logging to a file under the test's directory) and the fixture's finalizer stops them
all, printing their logs, which pytest shows when the test failed. CLI commands run through
:func:`tenantry`, without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.limits import GENEROUS_LIMITS, SHED_LAG_HARD, SHED_LAG_SOFT


def tenantry_env(**settings: str) -> dict[str, str]:
    """The test's environment, without any TENANTRY_* of the caller, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTRY_")}
    env["TENANTRY_LOG_LEVEL"] = "warning"
    env["TENANTRY_RATE_LIMITS"] = GENEROUS_LIMITS
    env["TENANTRY_SHED_LAG_SOFT"], env["TENANTRY_SHED_LAG_HARD"] = SHED_LAG_SOFT, SHED_LAG_HARD
    env.update({f"TENANTRY_{k.upper()}": v for k, v in settings.items()})
    return env


# The console script a person runs, next to the interpreter running the tests (the virtualenv's).
TENANTRY = str(Path(sys.executable).with_name("tenantry"))
BASE_URL = "http://tenantry.test"  # the issuer every test server signs with


@dataclass(frozen=True, repr=False)
class Completed:
    returncode: int
    stdout: str
    stderr: str

    def __repr__(self) -> str:  # what an assertion message shows: the output as printed
        return f"exit {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


async def tenantry(*args: str, env: dict[str, str], cwd: Path, within: float = 60.0) -> Completed:
    """Run ``tenantry *args`` to completion; a command still running after ``within`` seconds fails the test."""
    process = await asyncio.create_subprocess_exec(
        TENANTRY, *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(within):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        stdout, stderr = await process.communicate()
        raise AssertionError(
            f"tenantry {' '.join(args)} still ran after {within}s\n{Completed(-9, stdout.decode(), stderr.decode())!r}"
        ) from None
    assert process.returncode is not None
    return Completed(process.returncode, stdout.decode(), stderr.decode())


@dataclass
class Server:
    """One ``tenantry serve`` (its supervisor, when it has several workers) on a loopback port."""

    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> set[int]:
        """The processes of this server that may hold client connections: the server and its descendants."""
        found, todo = set(), [self.process.pid]
        while todo:
            pid = todo.pop()
            found.add(pid)
            with contextlib.suppress(OSError):
                todo += [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        return found

    def owner_of(self, client_port: int) -> int | None:
        """Which of the server's processes accepted the loopback connection from ``client_port`` (Linux)."""
        inode = _server_side_inode(self.port, client_port)
        if inode is None:
            return None
        for pid in self.worker_pids():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                            return pid
        return None


def _server_side_inode(server_port: int, client_port: int) -> int | None:
    loopback = "0100007F"  # 127.0.0.1 as /proc/net/tcp spells it
    local, remote = f"{loopback}:{server_port:04X}", f"{loopback}:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[9])
    return None


class Fleet:
    """The ``tenantry serve`` processes of one test. ``stop()`` belongs in a fixture's finalizer."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[Server] = []

    async def start(self, *envs: dict[str, str], workers: int = 1, within: float = 60.0) -> list[Server]:
        """One server per environment, booted in parallel; returns once every one answers ``/healthz``."""
        started = [self._spawn(env, workers) for env in envs]
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=1) as http:
            for server in started:
                await _wait_until_healthy(http, server, deadline)
        return started

    def _spawn(self, env: dict[str, str], workers: int) -> Server:
        port = free_port()
        log = self.directory / f"serve-{port}.log"
        args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        with open(log, "wb") as output:
            # Its own session, so that stopping it can reach every worker it spawned, whatever happened.
            process = subprocess.Popen(
                [TENANTRY, *args],
                env=env,
                cwd=self.directory,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(port=port, log=log, process=process)
        self.servers.append(server)
        return server

    def stop(self, *, grace: float = 15.0) -> None:
        """Terminate every server, kill what is still there after ``grace`` seconds, and print the logs."""
        for server in self.servers:
            if server.process.poll() is None:
                server.process.terminate()
        for server in self.servers:
            try:
                server.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                print(f"serve on port {server.port} ignored SIGTERM for {grace}s: killed with its workers")
                # Not reaped yet, so its process group id cannot belong to anyone else.
                os.killpg(server.process.pid, signal.SIGKILL)
                server.process.wait()
            # Shown by pytest only for a failed test.
            print(f"--- serve on port {server.port}, exit {server.process.returncode}, log {server.log} ---")
            print(server.log.read_text(errors="replace"))


async def _wait_until_healthy(http: httpx.AsyncClient, server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"serve exited with {server.process.returncode}:\n{server.log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get(f"{server.url}/healthz")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"serve on port {server.port} did not answer /healthz in time:\n{server.log.read_text()}")
