"""The rate-limit benchmark: what the limiter costs a limited route, in process and with Redis, and
how many checks one process gets out of the Redis store.

- In process: ``GET /v1/me`` (counted by ``api.ip`` and ``api.principal``) on a server with limits on
  against the same route on a server with ``TENANTRY_RATE_LIMITS_ENABLED=false``. Both servers get
  the same ``TENANTRY_RATE_LIMITS`` (every policy at a limit and burst of 10^9, so the whole limiter
  path runs and nothing is ever refused); the switch is their only difference. Target ≥ 0.9.
- Redis: the same two servers, both with ``TENANTRY_REDIS_URL``, so only limiting differs; the limited
  one keeps its budgets and in-flight leases in Redis. Target ≥ 0.75.
- Store: ``RedisStore.hit`` from one asyncio process (64 concurrent tasks through a ``RedisBatcher``,
  as ``tenantry serve`` builds the store: the checks made in one turn of the event loop go out as one
  batch) against ``redis-benchmark`` sending ``EVALSHA`` of the same Lua script (50 connections,
  pipelines of 16). No target: the ratio says how much of Redis's own rate a Tenantry process can use.

Both servers of a comparison are loaded in alternating rounds (off, on, on, off, off, on, ...) after
equal warm-ups, and each figure is the median of its rounds: a load that comes or goes on a shared
machine weighs on both alike, and one disturbed round does not move the result. Each server's CPU time
per answer over all its rounds is reported beside it (a steadier measure than requests per second).

Throughput runs are pinned like ``me`` (server on the first CPU, wrk on the second). Redis is a
``redis-server`` of the bench's own (no persistence, always stopped), pinned: beside wrk for the
comparison, so the measured server's CPU is its own; on the first CPU for the store, whose clients
(the Python driver and ``redis-benchmark``) are pinned to the second. Without ``redis-server`` (or
pinning) the shared Redis on 127.0.0.1:6379 is used, db 14 only, unpinned.
Run as ``python -m bench.ratelimit`` this module is the store driver (the bench starts it pinned).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import wrk
from bench.identity import (
    ME_CONNECTIONS,
    REPO,
    Run,
    _authorized,
    _clean_env,
    _note,
    _password,
    tenantry_account,
    tenantry_server,
    tenantry_token,
)
from bench.machine import _process_ticks
from bench.report import Figure, Target
from bench.servers import HOST, Server, free_port

HUGE = 10**9
ROUNDS = 8  # alternating rounds of each limiter comparison, off and on each
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
STORE_TASKS = 64
STORE_KEYS = 1000  # checks spread over this many keys, by the driver and by redis-benchmark alike
BENCHMARK_CONNECTIONS = 50
BENCHMARK_PIPELINE = 16
_KEY = "bench:{:012d}"  # redis-benchmark's __rand_int__ is 12 digits, zero-padded


def _limits_json() -> str:
    from tenantry.ratelimit.policies import DEFAULT_POLICIES

    return json.dumps({policy.name: {"limit": HUGE, "burst": HUGE} for policy in DEFAULT_POLICIES})


def _bench_rate() -> Any:
    from tenantry.ratelimit.gcra import Rate

    return Rate(HUGE, 60, HUGE)


# -- the benchmark -----------------------------------------------------------------------------------
def bench_limits(run: Run) -> None:
    """Limiter overhead in process and with Redis, then the Redis store's checks per second."""
    details: dict[str, Any] = {"pinning": run.pinning.description}
    run.report.details["limits"] = details
    details["in_process"] = _overhead(run, "in process", redis=None, target=0.9)
    with _own_redis(run, run.pinning.load_cpu) as redis:  # beside wrk: the server's CPU is the server's alone
        details["redis"] = _overhead(run, "Redis", redis=redis, target=0.75)
    with _own_redis(run, run.pinning.server_cpu) as redis:  # the clients are pinned to the other CPU
        details["store"] = _store(run, redis)


@dataclass(frozen=True, slots=True)
class _Side:
    """One server of a comparison: its wrk results round by round, and its CPU ticks over each."""

    server: Server
    auth: dict[str, Any]
    results: list[wrk.WrkResult]
    ticks: list[int]

    def measure(self, run: Run, seconds: float) -> float:
        """One round of wrk on this server's ``GET /v1/me``: its answers per second."""
        ticks = _process_ticks(self.server.pid)
        result = wrk.run(run.wrk, self.server.base_url + "/v1/me", duration=seconds, pinning=run.pinning, **self.auth)
        self.ticks.append(_process_ticks(self.server.pid) - ticks)
        self.results.append(result)
        return result.ok_per_second

    @property
    def rates(self) -> list[float]:
        return [result.ok_per_second for result in self.results]

    @property
    def cpu_us_per_request(self) -> float:
        """The server's CPU time (user and system, all threads) per answer, over every round."""
        answers = sum(result.requests - result.status_errors for result in self.results)
        return sum(self.ticks) / _TICKS_PER_SECOND * 1e6 / answers if answers else math.nan


def _overhead(run: Run, shape: str, *, redis: _Redis | None, target: float) -> dict[str, Any]:
    """``GET /v1/me`` with limits on against the same route on an otherwise identical server without, in
    alternating rounds (off, on, on, off, off, on, ...) so that a load coming or going on the machine weighs
    on both alike; each figure is the median of its rounds."""
    slug = "redis" if redis else "memory"
    common = {"TENANTRY_RATE_LIMITS": _limits_json(), **({"TENANTRY_REDIS_URL": redis.url} if redis else {})}
    if redis:
        redis.flush()
    seconds = _round_seconds(run)
    with ExitStack() as stack:
        sides: dict[bool, _Side] = {}
        for enabled in (False, True):
            env = {**common, "TENANTRY_RATE_LIMITS_ENABLED": "true" if enabled else "false"}
            name = f"limits-{slug}-{'on' if enabled else 'off'}"
            server = stack.enter_context(tenantry_server(run, name, pinning=run.pinning, env=env))
            sides[enabled] = _Side(server, _me_auth(server, limited=enabled), [], [])
        pids = (sides[False].server.pid, sides[True].server.pid, *((redis.pid,) if redis and redis.pid else ()))
        run.say(
            f"GET /v1/me, limits off and on ({shape}): {ROUNDS} rounds of {seconds:g} s each, alternating; "
            f"wrk -c{ME_CONNECTIONS}, {run.pinning.description}{redis.where if redis else ''}"
        )
        for side in (sides[False], sides[True]):  # equal warm-ups, unrecorded
            wrk.run(run.wrk, side.server.base_url + "/v1/me", duration=run.warmup, pinning=run.pinning, **side.auth)
            side.ticks.clear()
        ratios: list[float] = []
        with run.watch(f"GET /v1/me, limits off and on ({shape})", *pids):
            for number in range(ROUNDS):
                order = (False, True) if number % 4 in (0, 3) else (True, False)
                rate = {enabled: sides[enabled].measure(run, seconds) for enabled in order}
                ratios.append(rate[True] / rate[False] if rate[False] else math.nan)
    off, on = sides[False], sides[True]
    _report_overhead(run, slug, shape, off, on, ratios, target=target, where=redis.where if redis else "")
    return {
        "rounds": ROUNDS,
        "round_seconds": seconds,
        "ratios": [round(ratio, 4) for ratio in ratios],
        "off": [result.as_dict() for result in off.results],
        "on": [result.as_dict() for result in on.results],
        "cpu_us_per_request": {"off": off.cpu_us_per_request, "on": on.cpu_us_per_request},
    }


def _round_seconds(run: Run) -> float:
    """Each round's length (whole seconds, wrk's unit): each server is loaded about ``2 * duration`` in all."""
    return float(max(1, math.floor(2 * run.duration / ROUNDS)))


def _report_overhead(
    run: Run, slug: str, shape: str, off: _Side, on: _Side, ratios: list[float], *, target: float, where: str
) -> None:
    off_label, on_label = f"GET /v1/me, limits off ({shape})", f"GET /v1/me, limits on ({shape})"
    rounds = f"median of {ROUNDS} rounds"
    baseline = run.report.add(
        Figure(
            f"limits_{slug}_off_rps",
            off_label,
            statistics.median(off.rates),
            "req/s",
            note=_note(f"{rounds} ({min(off.rates):,.0f}-{max(off.rates):,.0f})", *off.results),
        )
    )
    kept = "limiter state in Redis" if slug == "redis" else "limiter state in process"
    per_round = " ".join(f"{ratio:.2f}" for ratio in ratios)
    run.report.add(
        Figure(
            f"limits_{slug}_on_rps",
            on_label,
            statistics.median(on.rates),
            "req/s",
            baseline=baseline,
            target=Target(">=", target),
            note=_note(
                f"{kept}{where}; {rounds} ({min(on.rates):,.0f}-{max(on.rates):,.0f}); each round's on/off: "
                f"{per_round} (median {statistics.median(ratios):.2f})",
                *on.results,
            ),
        )
    )
    cpu_off = run.report.add(
        Figure(f"limits_{slug}_off_cpu", f"{off_label}, server CPU", off.cpu_us_per_request, "µs/req")
    )
    run.report.add(
        Figure(
            f"limits_{slug}_on_cpu",
            f"{on_label}, server CPU",
            on.cpu_us_per_request,
            "µs/req",
            baseline=cpu_off,
            note="user + system time of the server process over every round, per answer",
        )
    )


def _me_auth(server: Server, *, limited: bool) -> dict[str, Any]:
    """wrk options for ``GET /v1/me`` as a fresh user; checks that the limiter counted it (or did not)."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        email, password = "limits@bench.example.com", _password()
        tenantry_account(client, email, password)
        token = tenantry_token(client, email, password)
        headers = _authorized(client, "/v1/me", token)
        policy = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).headers.get("ratelimit-policy", "")
    counted = '"api.ip"' in policy and '"api.principal"' in policy
    if counted != limited:
        state = "counted" if counted else "not counted"
        raise RuntimeError(f"{server.name}: GET /v1/me was {state} by the limiter (RateLimit-Policy: {policy!r})")
    return {"connections": ME_CONNECTIONS, "headers": headers}


# -- Redis -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Redis:
    """The Redis a part of the benchmark uses: one of its own, pinned, or the shared one's db 14."""

    port: int
    db: int
    pid: int | None  # when it runs on this machine
    where: str  # for the notes: where it runs

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/{self.db}"

    def client(self) -> Any:
        from redis import Redis

        return Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)

    def flush(self) -> None:
        """Empty the bench's database only (never FLUSHALL: the shared Redis has other users)."""
        with self.client() as client:
            client.flushdb()


@contextmanager
def _own_redis(run: Run, cpu: int | None) -> Iterator[_Redis]:
    """A ``redis-server`` of the bench's own on a free port, pinned to ``cpu``, without persistence, always
    stopped; the shared Redis on 127.0.0.1:6379 (db 14, unpinned) when redis-server or pinning is missing.

    Pinned, Redis neither takes the measured server's CPU at the scheduler's whim nor moves between CPUs
    from one round to the next (unpinned, it did both, and the Redis ratio swung by 0.1 between runs).
    """
    binary = shutil.which("redis-server")
    if binary is None or cpu is None:
        shared = _shared_redis()
        try:
            yield shared
        finally:
            shared.flush()
        return
    port = free_port()
    data = run.workdir / f"redis-{port}"
    data.mkdir()
    argv = [
        "taskset", "-c", str(cpu), binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
        "--dir", str(data), "--daemonize", "no",
    ]  # fmt: skip
    with (data / "redis.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        redis = _Redis(port, 0, process.pid, f", Redis pinned to CPU {cpu}")
        _wait_for(redis, process)
        yield redis
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_for(redis: _Redis, process: subprocess.Popen[bytes]) -> None:
    from redis.exceptions import RedisError

    deadline = time.monotonic() + 10
    while True:
        try:
            with redis.client() as client:
                client.ping()
            return
        except RedisError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {redis.port} did not start") from None
            time.sleep(0.05)


def _shared_redis() -> _Redis:
    """Redis on 127.0.0.1:6379, db 14 (flushed); its pid when it runs on this machine."""
    from redis.exceptions import RedisError

    redis = _Redis(6379, 14, None, ", shared Redis (db 14), not pinned")
    try:
        with redis.client() as client:
            client.ping()
            pid = int(client.info("server").get("process_id", 0))
    except RedisError as exc:
        raise RuntimeError(f"Redis at {redis.url} cannot be reached: {exc}") from exc
    redis.flush()
    return _Redis(redis.port, redis.db, pid if pid and Path(f"/proc/{pid}").exists() else None, redis.where)


@dataclass(frozen=True, slots=True)
class Evalsha:
    per_second: float
    requests: int
    p50_ms: float


def _script_args() -> list[str]:
    """The store's arguments for one check of the bench rate, as redis-py sends them (``repr`` of floats)."""
    rate = _bench_rate()
    return [repr(rate.emission_interval), repr(rate.tolerance), "1", "0"]


def _redis_benchmark(run: Run, redis: _Redis, binary: str, sha: str, requests: int) -> Evalsha:
    argv = [
        binary, "-h", HOST, "-p", str(redis.port), "--dbnum", str(redis.db), "-n", str(requests),
        "-c", str(BENCHMARK_CONNECTIONS), "-P", str(BENCHMARK_PIPELINE), "-r", str(STORE_KEYS), "--csv",
        "EVALSHA", sha, "1", "tenantry:rl:bench:__rand_int__", *_script_args(),
    ]  # fmt: skip
    done = subprocess.run(run.pinning.load(argv), capture_output=True, text=True, timeout=300, check=False)
    for line in done.stdout.splitlines():
        fields = [field.strip('"') for field in line.split('","')]
        if fields[0].startswith("EVALSHA") and len(fields) >= 5:
            return Evalsha(float(fields[1]), requests, float(fields[4]))
    raise RuntimeError(f"redis-benchmark exited with code {done.returncode}:\n{done.stdout}\n{done.stderr}")


def _store(run: Run, redis: _Redis) -> dict[str, Any]:
    """``RedisStore.hit`` from one pinned asyncio process against redis-benchmark's EVALSHA of the same script."""
    from tenantry.ratelimit.lua import GCRA_SCRIPT

    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError(
            "redis-benchmark is not installed (it comes with redis-server, e.g. `apt-get install redis`)"
        )
    redis.flush()
    with redis.client() as client:
        sha = str(client.script_load(GCRA_SCRIPT))
    pids = (redis.pid,) if redis.pid else ()
    where = f"pinned to CPU {run.pinning.load_cpu}" if run.pinning.is_used else "not pinned"
    run.say(
        f"Redis store: redis-benchmark EVALSHA -c{BENCHMARK_CONNECTIONS} -P{BENCHMARK_PIPELINE}, "
        f"RedisStore.hit x{STORE_TASKS} tasks, redis-benchmark EVALSHA; clients {where}{redis.where}"
    )
    # Warm-up, and the size of each half: redis-benchmark counts requests, not seconds.
    probe = _redis_benchmark(run, redis, binary, sha, 50_000)
    requests = max(50_000, int(probe.per_second * run.half))
    with run.watch("redis-benchmark EVALSHA (1st half)", *pids):
        before = _redis_benchmark(run, redis, binary, sha, requests)
    with run.watch("RedisStore.hit, one process", *pids):
        driven = _drive_pinned(run, redis)
    with run.watch("redis-benchmark EVALSHA (2nd half)", *pids):
        after = _redis_benchmark(run, redis, binary, sha, requests)
    # Both halves have the same number of requests: their joint rate is the harmonic mean.
    joint = 2 / (1 / before.per_second + 1 / after.per_second)
    baseline = run.report.add(
        Figure(
            "redis_evalsha_rps",
            "redis-benchmark EVALSHA (GCRA script)",
            joint,
            "calls/s",
            note=(
                f"-c{BENCHMARK_CONNECTIONS} -P{BENCHMARK_PIPELINE}, {STORE_KEYS} keys, {where}{redis.where}; "
                f"{before.per_second:,.0f} before, {after.per_second:,.0f} after"
            ),
        )
    )
    refused = f", {driven['refused']} refused" if driven["refused"] else ""
    run.report.add(
        Figure(
            "redis_store_checks_per_second",
            "RedisStore.hit, one process",
            driven["checks"] / driven["seconds"],
            "checks/s",
            baseline=baseline,
            note=f"{STORE_TASKS} tasks, batched per loop turn, {driven['loop']}, {STORE_KEYS} keys, {where}{refused}",
        )
    )
    return {
        "sha": sha,
        "args": _script_args(),
        "evalsha_before": before.per_second,
        "evalsha_after": after.per_second,
        "evalsha_requests_per_half": requests,
        "driver": driven,
    }


def _drive_pinned(run: Run, redis: _Redis) -> dict[str, Any]:
    argv = [
        sys.executable, "-m", "bench.ratelimit", "--url", redis.url, "--seconds", str(run.duration),
        "--warmup", str(run.warmup), "--tasks", str(STORE_TASKS),
    ]  # fmt: skip
    env = _clean_env(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    timeout = run.duration + run.warmup + 60
    done = subprocess.run(
        run.pinning.load(argv), capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO, env=env
    )
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise RuntimeError(f"the store driver exited with code {done.returncode}:\n{done.stdout}\n{done.stderr}")


# -- the store driver (``python -m bench.ratelimit``) ---------------------------------------------------
async def _drive(url: str, *, seconds: float, warmup: float, tasks: int) -> dict[str, Any]:
    from redis.asyncio import Redis

    from tenantry.ratelimit.batching import RedisBatcher
    from tenantry.ratelimit.store import RedisStore

    redis = Redis.from_url(url)
    batcher = RedisBatcher(redis)
    store = RedisStore(redis, batcher=batcher)  # as the platform builds it
    rate = _bench_rate()
    counts = {"checks": 0, "refused": 0}
    running = True

    async def checker(first: int) -> None:
        key = first
        while running:
            decision = await store.hit(_KEY.format(key % STORE_KEYS), rate)
            counts["checks"] += 1
            counts["refused"] += not decision.allowed
            key += tasks

    workers = [asyncio.create_task(checker(n)) for n in range(tasks)]
    try:
        await asyncio.sleep(warmup)
        start, checks0, refused0 = time.perf_counter(), counts["checks"], counts["refused"]
        await asyncio.sleep(seconds)
        elapsed, checks, refused = time.perf_counter() - start, counts["checks"], counts["refused"]
        running = False
        await asyncio.gather(*workers)
    finally:
        for worker in workers:
            worker.cancel()
        await batcher.close()
        await redis.aclose()
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    return {"checks": checks - checks0, "refused": refused - refused0, "seconds": elapsed, "loop": loop}


def _driver_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ratelimit", description="RedisStore.hit from one process")
    parser.add_argument("--url", default=f"redis://{HOST}:6379/14")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--tasks", type=int, default=STORE_TASKS)
    arguments = parser.parse_args(argv)
    coroutine = _drive(arguments.url, seconds=arguments.seconds, warmup=arguments.warmup, tasks=arguments.tasks)
    try:  # the loop uvicorn picks for `tenantry serve` when it is installed
        import uvloop
    except ImportError:
        result = asyncio.run(coroutine)
    else:
        result = uvloop.run(coroutine)
    print(json.dumps(result))
    return 0 if math.isfinite(result["seconds"]) else 1


if __name__ == "__main__":
    sys.exit(_driver_main())
