"""Fixtures of the rate-limit tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.exceptions import RedisError

from tests.conftest import free_port


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own (its URL and process), which the test may kill; never the machine's."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_redis(url, process)
        yield url, process
    finally:
        process.kill()
        process.wait()


def _wait_for_redis(url: str, process: subprocess.Popen[bytes], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    with Redis.from_url(url) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"redis-server exited with {process.returncode}"
            try:
                if client.ping():
                    return
            except RedisError:
                time.sleep(0.05)
    raise AssertionError(f"redis-server at {url} did not answer in {within}s")
