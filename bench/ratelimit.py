"""The rate-limit benchmark: what the limiter costs a limited route, in process and with Redis, and
how many checks one process gets out of the Redis store.

- In process: ``GET /v1/me`` (counted by ``api.ip`` and ``api.principal``) on a server with limits on
  against the same route on a server with ``TENANTRY_RATE_LIMITS_ENABLED=false``. Both servers get
  the same ``TENANTRY_RATE_LIMITS`` (every policy at a limit and burst of 10^9, so the whole limiter
  path runs and nothing is ever refused); the switch is their only difference. Target ≥ 0.9.
- Redis: the same two servers, both with ``TENANTRY_REDIS_URL`` (db 14), so only limiting differs;
  the limited one keeps its budgets and in-flight leases in Redis. Target ≥ 0.75.
- Store: ``RedisStore.hit`` from one asyncio process (64 concurrent tasks through a ``RedisBatcher``,
  as ``tenantry serve`` builds the store: the checks made in one turn of the event loop go out as one
  batch) against ``redis-benchmark`` sending ``EVALSHA`` of the same Lua script (50 connections,
  pipelines of 16). No target: the ratio says how much of Redis's own rate a Tenantry process can use.

Throughput runs are pinned like ``me`` (server on the first CPU, wrk on the second); for the store,
both clients (the Python driver and ``redis-benchmark``) are pinned to the second CPU, which leaves
the first to Redis in both cases. Baselines are measured in halves, before and after their figure.
Run as ``python -m bench.ratelimit`` this module is the store driver (the bench starts it pinned).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
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
from bench.report import Figure, Target
from bench.servers import HOST, Server

REDIS_URL = f"redis://{HOST}:6379/14"  # the bench's own database, flushed before use (never FLUSHALL)
HUGE = 10**9
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
    details["in_process"] = _overhead(run, "in process", redis_url=None, target=0.9)
    redis_pid = _redis_ready()
    details["redis"] = _overhead(run, "Redis", redis_url=REDIS_URL, target=0.75, extra_pids=_pids(redis_pid))
    details["store"] = _store(run, redis_pid)
    _flush()


def _overhead(
    run: Run, shape: str, *, redis_url: str | None, target: float, extra_pids: tuple[int, ...] = ()
) -> dict[str, Any]:
    """``GET /v1/me`` with limits on against the same route on an otherwise identical server without."""
    slug = "redis" if redis_url else "memory"
    common = {"TENANTRY_RATE_LIMITS": _limits_json(), **({"TENANTRY_REDIS_URL": redis_url} if redis_url else {})}
    if redis_url:
        _flush()
    with ExitStack() as stack:
        servers: dict[bool, Server] = {}
        auth: dict[bool, dict[str, Any]] = {}
        for enabled in (False, True):
            env = {**common, "TENANTRY_RATE_LIMITS_ENABLED": "true" if enabled else "false"}
            name = f"limits-{slug}-{'on' if enabled else 'off'}"
            server = stack.enter_context(tenantry_server(run, name, pinning=run.pinning, env=env))
            servers[enabled], auth[enabled] = server, _me_auth(server, limited=enabled)
        pids = (servers[False].pid, servers[True].pid, *extra_pids)
        off_label, on_label = f"GET /v1/me, limits off ({shape})", f"GET /v1/me, limits on ({shape})"
        run.say(f"{off_label}, {on_label}, limits off: wrk -c{ME_CONNECTIONS}, {run.pinning.description}")
        for enabled in (False, True):
            _load(run, None, servers[enabled], duration=run.warmup, pids=pids, **auth[enabled])
        before = _load(run, f"{off_label} (1st half)", servers[False], duration=run.half, pids=pids, **auth[False])
        limited = _load(run, on_label, servers[True], duration=run.duration, pids=pids, **auth[True])
        after = _load(run, f"{off_label} (2nd half)", servers[False], duration=run.half, pids=pids, **auth[False])
    halves = f"{before.ok_per_second:,.0f} before, {after.ok_per_second:,.0f} after"
    baseline = run.report.add(
        Figure(
            f"limits_{slug}_off_rps",
            off_label,
            wrk.ok_per_second(before, after),
            "req/s",
            note=_note(halves, before, after),
        )
    )
    where = "limiter state in Redis db 14" if redis_url else "limiter state in process"
    run.report.add(
        Figure(
            f"limits_{slug}_on_rps",
            on_label,
            limited.ok_per_second,
            "req/s",
            baseline=baseline,
            target=Target(">=", target),
            note=_note(f"{where}; p50 {limited.p50_ms:.1f} ms, p99 {limited.p99_ms:.1f} ms", limited),
        )
    )
    return {"off_before": before.as_dict(), "on": limited.as_dict(), "off_after": after.as_dict()}


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


def _load(
    run: Run, name: str | None, server: Server, *, duration: float, pids: tuple[int, ...], **options: Any
) -> wrk.WrkResult:
    """wrk on ``server``'s ``/v1/me``, watched with every process of the comparison (both servers, Redis)."""
    url = server.base_url + "/v1/me"
    if name is None:
        return wrk.run(run.wrk, url, duration=duration, pinning=run.pinning, **options)
    with run.watch(name, *pids):
        return wrk.run(run.wrk, url, duration=duration, pinning=run.pinning, **options)


# -- Redis -------------------------------------------------------------------------------------------
def _redis() -> Any:
    from redis import Redis

    return Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


def _flush() -> None:
    """Empty the bench's database (db 14) only."""
    with _redis() as client:
        client.flushdb()


def _redis_ready() -> int | None:
    """Redis answers on 127.0.0.1:6379 (db 14 flushed); its pid when it runs on this machine."""
    from redis.exceptions import RedisError

    try:
        with _redis() as client:
            client.ping()
            pid = int(client.info("server").get("process_id", 0))
    except RedisError as exc:
        raise RuntimeError(f"Redis at {REDIS_URL} cannot be reached: {exc}") from exc
    _flush()
    return pid if pid and Path(f"/proc/{pid}").exists() else None


def _pids(pid: int | None) -> tuple[int, ...]:
    return () if pid is None else (pid,)


@dataclass(frozen=True, slots=True)
class Evalsha:
    per_second: float
    requests: int
    p50_ms: float


def _script_args() -> list[str]:
    """The store's arguments for one check of the bench rate, as redis-py sends them (``repr`` of floats)."""
    rate = _bench_rate()
    return [repr(rate.emission_interval), repr(rate.tolerance), "1", "0"]


def _redis_benchmark(run: Run, binary: str, sha: str, requests: int) -> Evalsha:
    argv = [
        binary, "-h", HOST, "-p", "6379", "--dbnum", "14", "-n", str(requests),
        "-c", str(BENCHMARK_CONNECTIONS), "-P", str(BENCHMARK_PIPELINE), "-r", str(STORE_KEYS), "--csv",
        "EVALSHA", sha, "1", "tenantry:rl:bench:__rand_int__", *_script_args(),
    ]  # fmt: skip
    done = subprocess.run(run.pinning.load(argv), capture_output=True, text=True, timeout=300, check=False)
    for line in done.stdout.splitlines():
        fields = [field.strip('"') for field in line.split('","')]
        if fields[0].startswith("EVALSHA") and len(fields) >= 5:
            return Evalsha(float(fields[1]), requests, float(fields[4]))
    raise RuntimeError(f"redis-benchmark exited with code {done.returncode}:\n{done.stdout}\n{done.stderr}")


def _store(run: Run, redis_pid: int | None) -> dict[str, Any]:
    """``RedisStore.hit`` from one pinned asyncio process against redis-benchmark's EVALSHA of the same script."""
    from tenantry.ratelimit.lua import GCRA_SCRIPT

    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError(
            "redis-benchmark is not installed (it comes with redis-server, e.g. `apt-get install redis`)"
        )
    with _redis() as client:
        sha = str(client.script_load(GCRA_SCRIPT))
    pids = _pids(redis_pid)
    where = f"pinned to CPU {run.pinning.load_cpu}" if run.pinning.is_used else "not pinned"
    run.say(
        f"Redis store: redis-benchmark EVALSHA -c{BENCHMARK_CONNECTIONS} -P{BENCHMARK_PIPELINE}, "
        f"RedisStore.hit x{STORE_TASKS} tasks, redis-benchmark EVALSHA; clients {where}"
    )
    # Warm-up, and the size of each half: redis-benchmark counts requests, not seconds.
    probe = _redis_benchmark(run, binary, sha, 50_000)
    requests = max(50_000, int(probe.per_second * run.half))
    with run.watch("redis-benchmark EVALSHA (1st half)", *pids):
        before = _redis_benchmark(run, binary, sha, requests)
    with run.watch("RedisStore.hit, one process", *pids):
        driven = _drive_pinned(run)
    with run.watch("redis-benchmark EVALSHA (2nd half)", *pids):
        after = _redis_benchmark(run, binary, sha, requests)
    # Both halves have the same number of requests: their joint rate is the harmonic mean.
    joint = 2 / (1 / before.per_second + 1 / after.per_second)
    baseline = run.report.add(
        Figure(
            "redis_evalsha_rps",
            "redis-benchmark EVALSHA (GCRA script)",
            joint,
            "calls/s",
            note=(
                f"-c{BENCHMARK_CONNECTIONS} -P{BENCHMARK_PIPELINE}, {STORE_KEYS} keys, {where}; "
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


def _drive_pinned(run: Run) -> dict[str, Any]:
    argv = [
        sys.executable, "-m", "bench.ratelimit", "--url", REDIS_URL, "--seconds", str(run.duration),
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
    parser.add_argument("--url", default=REDIS_URL)
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
