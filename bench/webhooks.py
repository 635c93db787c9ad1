"""The webhooks benchmark: deliveries per second against a plain aiohttp client loop, and the latency
from an API call to the first attempt at the receiver.

- The receiver: ``python -m bench.webhooks receiver``, an asyncio protocol on uvloop with httptools'
  parser (what uvicorn uses), in its own process pinned to the second CPU. It answers every
  ``POST /hooks`` with 204 and counts it (monotonic arrival times; bodies only when asked), so it is
  never the bottleneck of either side. ``GET /stats``, ``GET /arrivals`` and ``GET /reset`` drive it.
- Baseline: ``python -m bench.webhooks client``, 100 concurrent workers POSTing a webhook-sized JSON
  body (~500 bytes, the Standard Webhooks headers included) with one ``aiohttp.ClientSession`` to the
  same receiver, pinned to the first CPU, in two halves around the Tenantry figure.
- Deliveries/s: a ``tenantry serve`` with ``TENANTRY_EMBEDDED_WORKER=false`` gets an org with one
  endpoint on the receiver (via the API) and N queued events; it is stopped, and a ``tenantry serve``
  with its embedded worker is started on the same SQLite file, pinned to the first CPU. From the first
  to the last arrival at the receiver: deliveries/s, fan-out, signing and bookkeeping included.
  Target: at least 0.5 of the baseline. CPU time per request (client) and per delivery (server,
  every thread, from /proc) are printed too: their ratio holds when other work shares the cores.
- Latency: on that same (now idle) server, 200 ``POST /v1/orgs/{id}/teams`` one at a time, one every
  30 ms; each ``team.created`` is matched at the receiver by its team id. From the request's send to
  its first arrival: p50 (target < 50 ms), p90, p99; then split into stages by the event's timestamp,
  the delivery's ``created_at`` (fan-out) and its first attempt's ``at`` (from the delivery log).

``BENCH_WEBHOOKS_PROFILE=<dir>`` runs the delivering server under cProfile (``time.thread_time``, so
the event loop's thread only, idle time excluded) from its first delivery to its last, and saves
``<dir>/deliver.prof``; the per-thread CPU of that server is always reported in ``details``.
Run as ``python -m bench.webhooks receiver|client|profiled`` this module is one of those processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx

from bench.identity import (
    REPO,
    Run,
    _clean_env,
    _expect,
    _password,
    tenantry_account,
    tenantry_server,
    tenantry_token,
)
from bench.probe import _percentile
from bench.report import Figure, Target
from bench.servers import HOST, Server, free_port

CONCURRENCY = 100
EVENTS_PER_SECOND_OF_DURATION = 800  # N = this x --duration (8,000 at the default 10 s)
MIN_EVENTS = 2000
QUEUEING_TASKS = 16
LATENCY_CALLS = 200
LATENCY_SPACING = 0.03
DELIVERY_STALL = 30.0  # seconds without a new arrival after which the delivery run is given up
QUIET = 0.5  # seconds without a new arrival after the last queued event: the run is over
HOOK_PATH = "/hooks"
PROFILE_ENV = "BENCH_WEBHOOKS_PROFILE"
WEBHOOK_ENV = {
    "TENANTRY_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
    "TENANTRY_WEBHOOK_CONCURRENCY_PER_ENDPOINT": str(CONCURRENCY),  # the baseline's concurrency
    "TENANTRY_WEBHOOK_TIMEOUT_SECONDS": "10",
    "TENANTRY_WEBHOOK_RETRY_SCHEDULE": "1,5,30",  # a failed attempt shows up as an extra request within the run
}


def _sample_body() -> bytes:
    """A ``team.created``-like Standard Webhooks body of about 500 bytes."""
    data = {
        "team": {
            "id": "0193b5c2-5a1e-7c3d-9f10-2b4c6d8e0a12",
            "org_id": "0193b5c2-4e7f-7a01-8b22-3c4d5e6f7a8b",
            "name": "Platform engineering",
            "created_at": "2025-01-01T12:00:00.123456+00:00",
        },
        "target": {"type": "team", "id": "0193b5c2-5a1e-7c3d-9f10-2b4c6d8e0a12"},
        "actor": {"type": "user", "id": "0193b5c2-3b2a-7e9f-a1b2-c3d4e5f6a7b8", "ip": "203.0.113.7"},
        "request_id": "0193b5c2-5a1e-7c3d-9f10-ffeeddccbbaa",
    }
    body = {"type": "team.created", "timestamp": "2025-01-01T12:00:00.123456+00:00", "data": data}
    return json.dumps(body, separators=(",", ":")).encode()


SAMPLE_HEADERS = {  # what a signed delivery carries (fixed here: the plain loop does not sign)
    "Content-Type": "application/json",
    "webhook-id": "msg_0193b5c2-5a1e-7c3d-9f10-2b4c6d8e0a12",
    "webhook-timestamp": "1735732800",
    "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
}


# -- the receiver (``python -m bench.webhooks receiver``) ----------------------------------------------
@dataclass(slots=True)
class _Tally:
    count: int = 0
    first: float = math.nan
    last: float = math.nan
    ids: set[bytes] = field(default_factory=set)  # webhook-id values: a retry arrives with the same one
    arrivals: list[tuple[float, str, str]] | None = None  # (at, webhook-id, body) when asked to keep them

    def reset(self, *, keep_bodies: bool) -> None:
        self.count, self.first, self.last = 0, math.nan, math.nan
        self.ids, self.arrivals = set(), [] if keep_bodies else None

    def control(self, path: str) -> bytes:
        if path.startswith("/reset"):
            self.reset(keep_bodies="bodies=1" in path)
        if path.startswith("/arrivals"):
            return json.dumps(self.arrivals or []).encode()
        first, last = _finite(self.first), _finite(self.last)
        return json.dumps({"count": self.count, "unique": len(self.ids), "first": first, "last": last}).encode()


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


class _Receiver(asyncio.Protocol):
    """One connection: counts each ``POST /hooks…`` as it completes and answers 204; anything else is control."""

    def __init__(self, tally: _Tally) -> None:
        import httptools

        self.tally = tally
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.msg_id = b""
        self.chunks: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:  # a malformed request: drop the connection, keep serving the others
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.msg_id, self.chunks = b"", b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 10 and name.lower() == b"webhook-id":
            self.msg_id = value

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        now = time.monotonic()
        tally, transport = self.tally, self.transport
        assert transport is not None
        if self.url.startswith(b"/hooks"):
            tally.count += 1
            if tally.count == 1:
                tally.first = now
            tally.last = now
            tally.ids.add(self.msg_id)
            if tally.arrivals is not None:
                tally.arrivals.append((now, self.msg_id.decode(), b"".join(self.chunks).decode(errors="replace")))
            transport.write(_NO_CONTENT)
        else:
            answer = tally.control(self.url.decode())
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(answer)}\r\n\r\n"
            transport.write(head.encode() + answer)
        if not self.parser.should_keep_alive():
            transport.close()


async def _receive(port: int) -> None:
    tally = _Tally()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Receiver(tally), HOST, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


# -- the plain client loop (``python -m bench.webhooks client``) ------------------------------------
async def _client_loop(url: str, *, seconds: float, warmup: float, concurrency: int) -> dict[str, Any]:
    import aiohttp

    body = _sample_body()
    done: list[tuple[float, float]] = []  # (finished at, latency) of each 2xx
    failures = 0
    stop_at = time.perf_counter() + warmup + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while (started := time.perf_counter()) < stop_at:
            async with session.post(url, data=body, headers=SAMPLE_HEADERS) as response:
                await response.read()
                finished = time.perf_counter()
                if 200 <= response.status < 300:
                    done.append((finished, finished - started))
                else:
                    failures += 1

    async def cpu_at(moment: float) -> float:
        await asyncio.sleep(moment - time.perf_counter())
        return time.process_time()

    window_start = time.perf_counter() + warmup
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        cpu = asyncio.gather(cpu_at(window_start), cpu_at(stop_at))
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        cpu_start, cpu_end = await cpu
    window_end = max(finished for finished, _ in done)
    latencies = sorted(latency * 1000 for finished, latency in done if finished >= window_start)
    elapsed = window_end - window_start
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "per_second": len(latencies) / elapsed,
        # CPU time per request: unlike the rate, barely moved by other processes sharing the core.
        "cpu_ms_per_request": (cpu_end - cpu_start) * 1000 / len(latencies),
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "failures": failures,
        "body_bytes": len(body),
    }


# -- a server under cProfile (``python -m bench.webhooks profiled <out> -- tenantry args``) -------------
def _profiled(out: str, tenantry_argv: list[str]) -> None:
    """Runs ``tenantry`` in this process; SIGUSR1 starts profiling the event loop's thread, SIGUSR2 saves."""
    import cProfile
    import runpy

    profiler = cProfile.Profile(time.thread_time)
    # Signal handlers run on the main thread, the one uvicorn's event loop runs on: the one profiled.

    def save(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, save)
    sys.argv = ["tenantry", *tenantry_argv]
    with contextlib.suppress(SystemExit):
        runpy.run_module("tenantry", run_name="__main__")


# -- the harness -------------------------------------------------------------------------------------
def _bench_env() -> dict[str, str]:
    return _clean_env(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def receiver_server(run: Run) -> Server:
    """The receiver process, pinned to the load CPU, ready once its ``/healthz`` answers."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.webhooks", "receiver", "--port", str(port)]
    log_path = run.workdir / "webhooks-receiver.log"
    return Server("webhook receiver", run.pinning.load(argv), port=port, env=_bench_env(), cwd=REPO, log_path=log_path)


class Tally:
    """What the receiver has counted, asked over HTTP."""

    def __init__(self, receiver: Server) -> None:
        self.client = httpx.Client(base_url=receiver.base_url, timeout=10)

    def reset(self, *, bodies: bool = False) -> None:
        self.client.get(f"/reset?bodies={int(bodies)}").raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self.client.get("/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def arrivals(self) -> list[tuple[float, str, str]]:
        """(monotonic arrival time, webhook-id, body) of each request since a ``reset(bodies=True)``."""
        response = self.client.get("/arrivals")
        response.raise_for_status()
        return [(float(at), str(msg_id), str(body)) for at, msg_id, body in response.json()]

    def close(self) -> None:
        self.client.close()


def _plain_loop(run: Run, receiver: Server, *, seconds: float) -> dict[str, Any]:
    """The baseline client process, pinned where the Tenantry server runs; its figures as a dict."""
    argv = [
        sys.executable, "-m", "bench.webhooks", "client", "--url", f"{receiver.base_url}{HOOK_PATH}",
        "--seconds", str(seconds), "--warmup", str(run.warmup), "--concurrency", str(CONCURRENCY),
    ]  # fmt: skip
    timeout, env = seconds + run.warmup + 60, _bench_env()
    done = subprocess.run(
        run.pinning.server(argv), capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO, env=env
    )
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            if result["failures"]:
                raise RuntimeError(f"the plain client loop got {result['failures']} non-2xx answers")
            return result
    raise RuntimeError(f"the plain client loop exited with code {done.returncode}:\n{done.stdout}\n{done.stderr}")


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` (tid -> seconds)."""
    ticks = os.sysconf("SC_CLK_TCK")
    times: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            times[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return times


# -- the org, its endpoint and its events, through the API -------------------------------------------
@dataclass(frozen=True, slots=True)
class Org:
    base_url: str
    headers: dict[str, str]
    org_id: str
    endpoint_id: str


def _org_with_endpoint(server: Server, hook_url: str) -> Org:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        email, password = "webhooks@bench.example.com", _password()
        tenantry_account(client, email, password)
        headers = {"Authorization": f"Bearer {tenantry_token(client, email, password)}"}
        org = _expect(client.post("/v1/orgs", json={"name": "Webhooks Bench"}, headers=headers), 201, "create org")
        org_id = str(org.json()["id"])
        endpoint = client.post(f"/v1/orgs/{org_id}/webhooks", json={"url": hook_url}, headers=headers)
        endpoint_id = str(_expect(endpoint, 201, "register endpoint").json()["id"])
    return Org(server.base_url, headers, org_id, endpoint_id)


async def _queue(org: Org, count: int) -> None:
    """``count`` test events for the endpoint, ``QUEUEING_TASKS`` requests at a time (a request the server
    sheds, 503, is sent again after its ``Retry-After``)."""
    path = f"/v1/orgs/{org.org_id}/webhooks/{org.endpoint_id}/test"
    left = iter(range(count))
    async with httpx.AsyncClient(base_url=org.base_url, headers=org.headers, timeout=30) as client:

        async def sender() -> None:
            for _ in left:
                response = await client.post(path)
                while response.status_code == 503:  # shed while the machine is busy: as a client should, wait
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    response = await client.post(path)
                _expect(response, 202, f"POST {path}")

        await asyncio.gather(*(sender() for _ in range(QUEUEING_TASKS)))


# -- the benchmark ------------------------------------------------------------------------------------
def bench_webhooks(run: Run) -> None:
    """Deliveries/s against the plain client loop, then API-to-first-attempt latency."""
    events = max(MIN_EVENTS, int(EVENTS_PER_SECOND_OF_DURATION * run.duration))
    details: dict[str, Any] = {"pinning": run.pinning.description, "events": events, "concurrency": CONCURRENCY}
    run.report.details["webhooks"] = details
    with receiver_server(run) as receiver:
        tally = Tally(receiver)
        try:
            run.say(f"Plain aiohttp loop (1st half): {CONCURRENCY} workers, one session; {run.pinning.description}")
            with run.watch("webhooks: plain loop (1st half)", receiver.pid):
                before = _plain_loop(run, receiver, seconds=run.half)
            deliver, delivered = _deliveries(run, receiver, tally, events)
            try:  # started already (its first deliveries are the measurement): stopped here
                with run.watch("webhooks: latency", deliver.pid, receiver.pid):
                    latency = _latency(run, tally, delivered["org"])
            finally:
                deliver.stop()
            run.say("Plain aiohttp loop (2nd half)")
            with run.watch("webhooks: plain loop (2nd half)", receiver.pid):
                after = _plain_loop(run, receiver, seconds=run.half)
        finally:
            tally.close()
    details.update(plain_before=before, plain_after=after, deliveries=delivered["details"], latency=latency)
    _report(run, before, after, delivered["details"], latency)


def _serve_env() -> dict[str, str]:
    return {**WEBHOOK_ENV, "TENANTRY_EMBEDDED_WORKER": "false"}


def _deliveries(run: Run, receiver: Server, tally: Tally, events: int) -> tuple[Server, dict[str, Any]]:
    """Queue ``events`` on a server without worker, then deliver them from a fresh one with its worker.
    Returns the delivering server (still running, for the latency part) and what was measured."""
    queueing = tenantry_server(run, "webhooks", pinning=run.pinning, env=_serve_env())
    with queueing:
        org = _org_with_endpoint(queueing, f"{receiver.base_url}{HOOK_PATH}")
        run.say(f"Queueing {events} webhook.test events (embedded worker off)")
        started = time.monotonic()
        asyncio.run(_queue(org, events))
        queued_in = time.monotonic() - started
    tally.reset()
    deliver = _delivering_server(run, queueing)
    run.say(f"Delivering {events} events: tenantry serve with its embedded worker, {run.pinning.description}")
    launched = time.monotonic()
    deliver.start()
    try:
        with run.watch("webhooks: Tenantry deliveries", deliver.pid, receiver.pid):
            measured = _await_deliveries(deliver, tally, events)
    except BaseException:
        deliver.stop()
        raise
    measured.update(queued_in_s=round(queued_in, 2), first_arrival_after_launch_s=measured["first"] - launched)
    return deliver, {"org": org, "details": measured}


def _delivering_server(run: Run, queueing: Server) -> Server:
    """The same ``tenantry serve`` on the same data, with its embedded worker (under cProfile if asked)."""
    argv = list(queueing.argv)
    profile_dir = os.environ.get(PROFILE_ENV)
    if profile_dir:
        out = Path(profile_dir).resolve() / "deliver.prof"
        out.parent.mkdir(parents=True, exist_ok=True)
        wrapper = [sys.executable, "-m", "bench.webhooks", "profiled", str(out), "--", *argv[argv.index("serve") :]]
        argv = run.pinning.server(wrapper)
    env = {**queueing.env, "TENANTRY_EMBEDDED_WORKER": "true"}
    if profile_dir:
        env["PYTHONPATH"] = _bench_env()["PYTHONPATH"]
    return Server(
        "tenantry serve (webhooks, delivering)",
        argv,
        port=queueing.port,
        env=env,
        cwd=queueing.cwd,
        log_path=run.workdir / "tenantry-webhooks-deliver.log",
    )


def _await_deliveries(server: Server, tally: Tally, events: int) -> dict[str, Any]:
    """Poll the receiver until ``events`` distinct deliveries arrived and then nothing for ``QUIET`` s.

    The org's own earlier events (created, member added) are delivered too: the endpoint exists when
    the dispatcher first reads them. The server's per-thread CPU is taken from the first arrival on."""
    profiling = bool(os.environ.get(PROFILE_ENV))
    stats, cpu_from, cpu_to, unique_from = tally.stats(), None, None, 0
    progress_at = time.monotonic()
    while cpu_to is None or time.monotonic() - progress_at < QUIET:
        if time.monotonic() - progress_at > DELIVERY_STALL:
            got = stats["unique"]
            raise RuntimeError(f"{got} of {events} deliveries arrived, then none for {DELIVERY_STALL:.0f} s")
        time.sleep(0.02)
        previous, stats = stats["count"], tally.stats()
        if stats["count"] > previous:
            progress_at = time.monotonic()
        if cpu_from is None and stats["count"]:
            cpu_from, unique_from = _thread_cpu(server.pid), stats["unique"]
            if profiling:
                os.kill(server.pid, signal.SIGUSR1)
        if cpu_to is None and stats["unique"] >= events:
            cpu_to, unique_to = _thread_cpu(server.pid), stats["unique"]
            if profiling:
                os.kill(server.pid, signal.SIGUSR2)
    assert cpu_from is not None
    assert cpu_to is not None
    threads = {tid: cpu_to[tid] - cpu_from.get(tid, 0.0) for tid in cpu_to}
    covered = max(1, unique_to - unique_from)
    return {
        "arrived": stats["count"],
        "distinct": stats["unique"],
        "first": stats["first"],
        "seconds": stats["last"] - stats["first"],
        "per_second": (stats["count"] - 1) / (stats["last"] - stats["first"]),
        "cpu_ms_per_delivery": sum(threads.values()) * 1000 / covered,
        "loop_cpu_ms_per_delivery": threads.get(server.pid, 0.0) * 1000 / covered,
        "thread_cpu_s": {str(tid): round(s, 3) for tid, s in sorted(threads.items(), key=lambda i: -i[1]) if s},
    }


def _latency(run: Run, tally: Tally, org: Org) -> dict[str, Any]:
    """``LATENCY_CALLS`` team creations, one every ``LATENCY_SPACING`` s; send -> first arrival of each."""
    tally.reset(bodies=True)
    path = f"/v1/orgs/{org.org_id}/teams"
    sent: dict[str, tuple[float, float]] = {}  # team id -> (sent at, answered at)
    run.say(f"Latency: {LATENCY_CALLS} POST {path}, one every {LATENCY_SPACING * 1000:.0f} ms")
    with httpx.Client(base_url=org.base_url, headers=org.headers, timeout=10) as client:
        _expect(client.get(path), 200, f"GET {path}")  # a warm connection
        beat = time.monotonic()
        for number in range(LATENCY_CALLS):
            at = time.monotonic()
            response = _expect(client.post(path, json={"name": f"latency {number}"}), 201, f"POST {path}")
            sent[str(response.json()["id"])] = (at, time.monotonic())
            beat = max(beat + LATENCY_SPACING, time.monotonic())
            time.sleep(max(0.0, beat - time.monotonic()))
    deadline = time.monotonic() + 10
    while tally.stats()["count"] < LATENCY_CALLS and time.monotonic() < deadline:
        time.sleep(0.05)
    first: dict[str, tuple[float, str, str]] = {}  # team id -> its first arrival (at, webhook-id, body)
    for arrived, msg_id, body in tally.arrivals():
        team_id = json.loads(body).get("data", {}).get("team", {}).get("id")
        if team_id in sent and team_id not in first:
            first[team_id] = (arrived, msg_id, body)
    if not first:
        raise RuntimeError(f"none of {LATENCY_CALLS} team.created deliveries arrived")
    from_send = sorted((first[t][0] - sent[t][0]) * 1000 for t in first)
    from_answer = sorted((first[t][0] - sent[t][1]) * 1000 for t in first)
    api = sorted((answered - at) * 1000 for at, answered in sent.values())
    return {
        "calls": LATENCY_CALLS,
        "arrived": len(first),
        **{f"p{p}_ms": _percentile(from_send, p) for p in (50, 90, 99)},
        "max_ms": from_send[-1],
        "from_answer_p50_ms": _percentile(from_answer, 50),
        "api_p50_ms": _percentile(api, 50),
        "stages_ms": _stages(org, {t: (sent[t][0], *first[t]) for t in first}),
    }


STAGES = ("API -> event written", "event -> fanned out", "fanned out -> attempt", "attempt -> arrival")


def _stages(org: Org, calls: dict[str, tuple[float, float, str, str]]) -> dict[str, dict[str, float]]:
    """Where the latency goes, from the event's timestamp (body), the delivery's ``created_at`` (fan-out)
    and its first attempt's ``at`` (the deliveries API): p50 and p90 of each stage, in ms.

    ``calls``: team id -> (sent at, arrived at, webhook-id, body), monotonic; both clocks are this machine's."""
    wall = time.time() - time.monotonic()
    logged = _logged_deliveries(org, {msg_id for _, _, msg_id, _ in calls.values()})
    spans: list[list[float]] = [[] for _ in STAGES]
    for sent, arrived, msg_id, body in calls.values():
        if msg_id not in logged:
            continue
        occurred = datetime.fromisoformat(json.loads(body)["timestamp"]).timestamp()
        points = (sent + wall, occurred, *logged[msg_id], arrived + wall)
        for span, start, end in zip(spans, points, points[1:], strict=False):
            span.append((end - start) * 1000)
    return {
        stage: {"p50": _percentile(sorted(span), 50), "p90": _percentile(sorted(span), 90)}
        for stage, span in zip(STAGES, spans, strict=True)
        if span
    }


def _logged_deliveries(org: Org, msg_ids: set[str]) -> dict[str, tuple[float, float]]:
    """event id -> (delivery created, first attempt started), POSIX seconds, from the endpoint's delivery log."""
    found: dict[str, tuple[float, float]] = {}
    path = f"/v1/orgs/{org.org_id}/webhooks/{org.endpoint_id}/deliveries"
    cursor: str | None = None
    with httpx.Client(base_url=org.base_url, headers=org.headers, timeout=30) as client:
        for _ in range(10):
            params: dict[str, str | int] = {"limit": 200} if cursor is None else {"limit": 200, "cursor": cursor}
            page = _expect(client.get(path, params=params), 200, f"GET {path}").json()
            for item in page["items"]:
                if item["event_id"] in msg_ids and item["attempts"]:
                    attempt = min(datetime.fromisoformat(a["at"]).timestamp() for a in item["attempts"])
                    found[item["event_id"]] = (datetime.fromisoformat(item["created_at"]).timestamp(), attempt)
            cursor = page["next_cursor"]
            if cursor is None or len(found) == len(msg_ids):
                break
    return found


def _report(
    run: Run, before: dict[str, Any], after: dict[str, Any], delivered: dict[str, Any], latency: dict[str, Any]
) -> None:
    requests = before["requests"] + after["requests"]
    p50, p99 = (before["p50_ms"] + after["p50_ms"]) / 2, (before["p99_ms"] + after["p99_ms"]) / 2
    plain_cpu = sum(half["cpu_ms_per_request"] * half["requests"] for half in (before, after)) / requests
    pinned = "pinned" if run.pinning.is_used else "not pinned"
    baseline = run.report.add(
        Figure(
            "webhooks_plain_loop_rps",
            "aiohttp loop -> receiver",
            requests / (before["seconds"] + after["seconds"]),
            "req/s",
            note=(
                f"{CONCURRENCY} workers, {before['body_bytes']} B bodies, {pinned}; p50 {p50:.1f} ms, "
                f"p99 {p99:.1f} ms; {plain_cpu:.3f} ms CPU each; "
                f"{before['per_second']:,.0f} before, {after['per_second']:,.0f} after"
            ),
        )
    )
    retries = delivered["arrived"] - delivered["distinct"]
    setup = delivered["distinct"] - run.report.details["webhooks"]["events"]  # the org's events before the endpoint
    run.report.add(
        Figure(
            "webhooks_deliveries_per_second",
            "Tenantry webhook deliveries",
            delivered["per_second"],
            "deliveries/s",
            baseline=baseline,
            target=Target(">=", 0.5),
            note=(
                f"{delivered['arrived']} ({setup} of the org's setup) in {delivered['seconds']:.2f} s, first to last; "
                f"{delivered['cpu_ms_per_delivery']:.3f} ms CPU each ({delivered['loop_cpu_ms_per_delivery']:.3f} "
                f"on the loop thread; CPU ratio {plain_cpu / delivered['cpu_ms_per_delivery']:.2f}x)"
                + (f"; {retries} retries" if retries else "")
            ),
        )
    )
    missing = latency["calls"] - latency["arrived"]
    run.report.add(
        Figure(
            "webhooks_latency_p50_ms",
            "API call -> first attempt, p50",
            latency["p50_ms"],
            "ms",
            target=Target("<", 50, applies_to="value"),
            note=(
                f"{latency['calls']} POST teams, one every {LATENCY_SPACING * 1000:.0f} ms, from send; "
                f"{latency['from_answer_p50_ms']:.1f} ms from the answer (API p50 {latency['api_p50_ms']:.1f} ms)"
                + (f"; {missing} never arrived" if missing else "")
            ),
        )
    )
    run.report.add(Figure("webhooks_latency_p90_ms", "API call -> first attempt, p90", latency["p90_ms"], "ms"))
    run.report.add(
        Figure(
            "webhooks_latency_p99_ms",
            "API call -> first attempt, p99",
            latency["p99_ms"],
            "ms",
            note=f"max {latency['max_ms']:.1f} ms",
        )
    )
    if latency["stages_ms"]:
        stages = ", ".join(f"{stage} {ms['p50']:.1f} ms" for stage, ms in latency["stages_ms"].items())
        run.report.notes.append(f"Webhook latency by stage (p50 of each): {stages}.")


# -- the processes this module also is ----------------------------------------------------------------
def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description="The webhooks bench's processes")
    commands = parser.add_subparsers(dest="command", required=True)
    receiver = commands.add_parser("receiver", help="the counting receiver")
    receiver.add_argument("--port", type=int, required=True)
    client = commands.add_parser("client", help="the plain aiohttp client loop; prints its figures as JSON")
    client.add_argument("--url", required=True)
    client.add_argument("--seconds", type=float, default=5.0)
    client.add_argument("--warmup", type=float, default=1.0)
    client.add_argument("--concurrency", type=int, default=CONCURRENCY)
    profiled = commands.add_parser("profiled", help="tenantry under cProfile, toggled by SIGUSR1/SIGUSR2")
    profiled.add_argument("out")
    profiled.add_argument("tenantry_argv", nargs=argparse.REMAINDER)
    arguments = parser.parse_args(argv)
    if arguments.command == "profiled":
        tenantry_argv = arguments.tenantry_argv
        _profiled(arguments.out, tenantry_argv[1:] if tenantry_argv[:1] == ["--"] else tenantry_argv)
        return 0
    import uvloop  # the loop uvicorn picks for `tenantry serve`

    if arguments.command == "receiver":
        uvloop.run(_receive(arguments.port))
        return 0
    figures = uvloop.run(
        _client_loop(
            arguments.url, seconds=arguments.seconds, warmup=arguments.warmup, concurrency=arguments.concurrency
        )
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
