"""Real ``tenantry`` processes for tests that must cross a process boundary."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

TENANTRY = [sys.executable, "-m", "tenantry"]


def tenantry_env(**settings: str) -> dict[str, str]:
    """The test's environment, without any TENANTRY_* of the caller, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTRY_")}
    env["TENANTRY_LOG_LEVEL"] = "warning"
    env.update({f"TENANTRY_{k.upper()}": v for k, v in settings.items()})
    return env


def run(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TENANTRY, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


class Server:
    """``tenantry serve`` on a loopback port, stopped (and its log shown on failure) when done."""

    def __init__(self, *, port: int, env: dict[str, str], cwd: Path, workers: int = 1) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = cwd / f"serve-{port}.log"
        self._args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        self._env, self._cwd = env, cwd
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(
                [*TENANTRY, *self._args], env=self._env, cwd=self._cwd, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise AssertionError(f"server did not become ready:\n{self.log.read_text()}")

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if exc and exc[0] is not None:
            print(f"--- {self.log} ---\n{self.log.read_text()}")  # shown by pytest on failure
