"""A private PostgreSQL server for one test, which it may stop and start at will.

The machine's PostgreSQL serves every other test, so it is never restarted. This one is made by
``initdb`` in a temporary directory, trusts local connections, listens on a free port of 127.0.0.1
only, and is stopped and deleted afterwards. PostgreSQL refuses to run as root: when the tests do,
its programs run as the ``postgres`` user (``runuser``), and its directory belongs to that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import asyncpg

SERVER_USER = "postgres"  # the unix user the server runs as when the tests run as root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin_dir() -> Path:
    """The newest installed PostgreSQL's programs (Debian's layout), else those on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    return Path(pg_ctl).resolve().parent


class PgCluster:
    """One PostgreSQL server in a directory of its own; ``init()`` then ``start()``, ``destroy()`` at the end."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = _free_port()
        # Under /tmp, not pytest's tmp_path: that one is private to the tests' user, and the server may run as another.
        self.directory = Path(tempfile.mkdtemp(prefix="tenantry-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", SERVER_USER, "--"]

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def url(self, database: str = "tenantry") -> str:
        """What Tenantry connects with (as the superuser ``postgres``, switching to its role by itself)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            [*self._as, str(self.bin / program), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.directory,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start the server and wait until it accepts connections (after crash recovery, if it was killed)."""
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.directory}",
                # Killed by the tests, never by the machine: what the kernel holds survives, so no fsync.
                "-c fsync=off",
                "-c max_connections=200",
            ]
        )
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options)

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; ``immediate`` is a crash (every connection cut, recovery at the next start)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    async def create_database(self, name: str = "tenantry") -> str:
        connection = await asyncpg.connect(self.admin_url())
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server if it runs (killing it, by the pid it wrote, if pg_ctl cannot) and delete everything."""
        if self.is_running():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
