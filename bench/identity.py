"""The identity benchmarks: who-am-I throughput, a peer comparison, and a login storm.

- ``me``: ``GET /v1/me`` on one ``tenantry serve --workers 1`` process, against the same process's
  ``GET /healthz`` (the framework's own floor), then against ``GET /users/me`` of a minimal
  fastapi-users application on the same SQLite footing.
- ``login``: the machine's raw argon2id verification ceiling, then ``POST /v1/auth/login`` with
  correct passwords at a concurrency of 8, while a probe times ``GET /healthz`` every 20 ms.

Baselines are split in two halves taken before and after the figure they are the baseline of, so
a load that comes or goes on the machine in between weighs on both alike. Each benchmark starts its
own servers on fresh temporary data and stops them before it returns.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from bench import wrk
from bench.hashing import HashingParameters, Verifications, verify_for
from bench.machine import CpuWatch
from bench.probe import LatencyProbe, LatencySummary
from bench.report import Figure, Report, Target
from bench.servers import HOST, Pinning, Server, free_port
from tenantry.ratelimit.policies import DEFAULT_POLICIES

REPO = Path(__file__).resolve().parent.parent
UNREFUSING_LIMITS = json.dumps(
    {p.name: {"limit": 10**9, "period": 60, "burst": 10**9} for p in DEFAULT_POLICIES}
    | {"costs": {"read": 1, "write": 1, "mail": 1}}
)
ME_CONNECTIONS = 32
LOGIN_CONNECTIONS = 8
LOGIN_USERS = 20
PROBE_INTERVAL = 0.02


@dataclass(frozen=True, slots=True)
class Run:
    """What every benchmark of one run shares."""

    duration: float
    wrk: str
    pinning: Pinning
    workdir: Path
    report: Report
    console: Console

    @property
    def warmup(self) -> float:
        """Seconds of unrecorded load before a measurement: fills caches and connection pools."""
        return min(2.0, max(1.0, self.duration / 5))

    @property
    def half(self) -> float:
        """The length of each half of a baseline taken on both sides of its figure."""
        return max(1.0, self.duration / 2)

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{message}[/dim]", highlight=False)

    @contextmanager
    def watch(self, name: str, *pids: int) -> Iterator[None]:
        """Record how much other processes used the CPUs while ``name`` was measured."""
        with CpuWatch(*pids) as watch:
            yield
        if watch.background_cpus is not None:
            self.report.background[name] = watch.background_cpus

    def load(
        self,
        name: str | None,
        server: Server,
        path: str,
        *,
        duration: float,
        pinning: Pinning | None = None,
        **options: Any,
    ) -> wrk.WrkResult:
        """wrk on ``server``'s ``path``; watched under ``name`` unless it is a warm-up (``None``)."""
        url = server.base_url + path
        if name is None:
            return wrk.run(self.wrk, url, duration=duration, pinning=pinning or self.pinning, **options)
        with self.watch(name, server.pid):
            return wrk.run(self.wrk, url, duration=duration, pinning=pinning or self.pinning, **options)


# -- servers ---------------------------------------------------------------------------------------
def _clean_env(**extra: str) -> dict[str, str]:
    # Inherited TENANTRY_* variables (a Redis URL, other argon2 costs) would change what is measured.
    env = {name: value for name, value in os.environ.items() if not name.startswith("TENANTRY_")}
    env.update(extra)
    return env


def tenantry_server(run: Run, name: str, *, pinning: Pinning, env: Mapping[str, str] | None = None) -> Server:
    """A ``tenantry serve --workers 1`` on its own temporary data dir and SQLite file.

    ``env`` adds (or overrides) variables of the server's environment, e.g. ``TENANTRY_REDIS_URL``.
    """
    port = free_port()
    data_dir = run.workdir / f"tenantry-{name}"
    data_dir.mkdir()
    variables = {
        "TENANTRY_DATA_DIR": str(data_dir),
        "TENANTRY_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'tenantry.db'}",
        "TENANTRY_LOG_LEVEL": "warning",
        "TENANTRY_BASE_URL": f"http://{HOST}:{port}",
        # Rate limits on (every request takes the limiter's path) with budgets no load here exhausts: a
        # benchmark measures serving, not refusing. `limits` measures the limiter's own cost.
        "TENANTRY_RATE_LIMITS": UNREFUSING_LIMITS,
        **(env or {}),
    }
    script = Path(sys.executable).with_name("tenantry")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tenantry"]
    argv = [*command, "serve", "--host", HOST, "--port", str(port), "--workers", "1"]
    return Server(
        f"tenantry serve ({name})",
        pinning.server(argv),
        port=port,
        env=_clean_env(**variables),
        cwd=data_dir,
        log_path=run.workdir / f"tenantry-{name}.log",
    )


def fastapi_users_server(run: Run) -> Server:
    """The fastapi-users peer under uvicorn, on a SQLite file of its own."""
    port = free_port()
    data_dir = run.workdir / "fastapi-users"
    data_dir.mkdir()
    env = _clean_env(
        BENCH_PEER_DATABASE_URL=f"sqlite+aiosqlite:///{data_dir / 'users.db'}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    argv = [
        sys.executable, "-m", "uvicorn", "bench.peers.fastapi_users_app:app",
        "--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return Server(
        "fastapi-users peer", run.pinning.server(argv), port=port, env=env, cwd=REPO, log_path=data_dir / "server.log"
    )


# -- accounts --------------------------------------------------------------------------------------
def _expect(response: httpx.Response, status: int, what: str) -> httpx.Response:
    if response.status_code != status:
        raise RuntimeError(f"{what}: expected {status}, got {response.status_code}: {response.text[:300]}")
    return response


def _password() -> str:
    return f"bench-{secrets.token_urlsafe(12)}"


def tenantry_account(client: httpx.Client, email: str, password: str) -> None:
    body = {"email": email, "password": password, "name": "Bench User"}
    _expect(client.post("/v1/auth/signup", json=body), 201, f"sign-up of {email}")


def tenantry_token(client: httpx.Client, email: str, password: str) -> str:
    login = _expect(client.post("/v1/auth/login", json={"email": email, "password": password}), 200, "login")
    return str(login.json()["access_token"])


def fastapi_users_token(client: httpx.Client, email: str, password: str) -> str:
    _expect(client.post("/auth/register", json={"email": email, "password": password}), 201, "register")
    login = _expect(client.post("/auth/jwt/login", data={"username": email, "password": password}), 200, "login")
    return str(login.json()["access_token"])


def _authorized(client: httpx.Client, path: str, token: str) -> list[str]:
    """The wrk header for ``token``, after checking once that ``path`` answers 200 with it."""
    _expect(client.get(path, headers={"Authorization": f"Bearer {token}"}), 200, f"GET {path}")
    return [f"Authorization: Bearer {token}"]


def _note(text: str, *results: wrk.WrkResult) -> str:
    problems = "; ".join(result.problems for result in results if result.problems)
    return f"{text}; {problems}" if problems else text


# -- me --------------------------------------------------------------------------------------------
def bench_me(run: Run) -> None:
    """``GET /v1/me`` against ``GET /healthz`` of the same server, then against fastapi-users."""
    me = _bench_tenantry_me(run)
    _bench_fastapi_users_me(run, me)


def _bench_tenantry_me(run: Run) -> Figure:
    with tenantry_server(run, "me", pinning=run.pinning) as server, httpx.Client(base_url=server.base_url) as client:
        email, password = "me@bench.example.com", _password()
        tenantry_account(client, email, password)
        auth = {
            "connections": ME_CONNECTIONS,
            "headers": _authorized(client, "/v1/me", tenantry_token(client, email, password)),
        }
        run.say(f"Tenantry GET /healthz, GET /v1/me, GET /healthz: wrk -c{ME_CONNECTIONS}, {run.pinning.description}")
        run.load(None, server, "/v1/me", duration=run.warmup, **auth)
        before = run.load("GET /healthz (1st half)", server, "/healthz", duration=run.half, connections=ME_CONNECTIONS)
        me = run.load("GET /v1/me", server, "/v1/me", duration=run.duration, **auth)
        after = run.load("GET /healthz (2nd half)", server, "/healthz", duration=run.half, connections=ME_CONNECTIONS)
    halves = f"{before.ok_per_second:,.0f} before, {after.ok_per_second:,.0f} after"
    baseline = run.report.add(
        Figure(
            "tenantry_healthz_rps",
            "Tenantry GET /healthz",
            wrk.ok_per_second(before, after),
            "req/s",
            note=_note(f"1 worker, {'pinned' if run.pinning.is_used else 'not pinned'}; {halves}", before, after),
        )
    )
    figure = run.report.add(
        Figure(
            "tenantry_me_rps",
            "Tenantry GET /v1/me",
            me.ok_per_second,
            "req/s",
            baseline=baseline,
            target=Target(">=", 0.6),
            note=_note(f"p50 {me.p50_ms:.1f} ms, p99 {me.p99_ms:.1f} ms", me),
        )
    )
    run.report.details["me"] = {
        "pinning": run.pinning.description,
        "healthz_before": before.as_dict(),
        "me": me.as_dict(),
        "healthz_after": after.as_dict(),
    }
    return figure


def _bench_fastapi_users_me(run: Run, tenantry_me: Figure) -> None:
    with fastapi_users_server(run) as server, httpx.Client(base_url=server.base_url) as client:
        token = fastapi_users_token(client, "me@bench.example.com", _password())
        auth = {"connections": ME_CONNECTIONS, "headers": _authorized(client, "/users/me", token)}
        run.say(f"fastapi-users GET /users/me: wrk -c{ME_CONNECTIONS}, {run.pinning.description}")
        run.load(None, server, "/users/me", duration=run.warmup, **auth)
        peer = run.load("fastapi-users GET /users/me", server, "/users/me", duration=run.duration, **auth)
    baseline = run.report.add(
        Figure(
            "fastapi_users_me_rps",
            "fastapi-users GET /users/me",
            peer.ok_per_second,
            "req/s",
            note=_note(f"p50 {peer.p50_ms:.1f} ms, p99 {peer.p99_ms:.1f} ms", peer),
        )
    )
    run.report.add(
        Figure(
            "tenantry_me_vs_fastapi_users",
            "Tenantry GET /v1/me vs peer",
            tenantry_me.value,
            "req/s",
            baseline=baseline,
            target=Target(">=", 1.5),
        )
    )
    run.report.details["fastapi_users"] = {"pinning": run.pinning.description, "me": peer.as_dict()}


# -- login -----------------------------------------------------------------------------------------
def bench_login(run: Run) -> None:
    """Logins per second against the raw argon2 ceiling, and ``/healthz`` latency during the storm."""
    parameters = HashingParameters.tenantry_defaults()
    run.say(f"argon2id verify ceiling (1st half): {parameters.describe()}, no server running")
    with run.watch("argon2 ceiling (1st half)"):
        before = verify_for(parameters, duration=run.half)
    # The server hashes on two threads besides its event loop: pinned to one core it would measure the pin.
    unpinned = Pinning.none("the server's argon2 threads need both cores")
    with tenantry_server(run, "login", pinning=unpinned) as server:
        bodies = _login_users(server)
        with run.watch("GET /healthz idle", server.pid):
            idle = _probe(f"{server.base_url}/healthz", seconds=min(3.0, max(1.0, run.duration / 4)))
        run.say(f"Login storm: wrk -c{LOGIN_CONNECTIONS}, {len(bodies)} users, /healthz probe, {unpinned.description}")
        with LatencyProbe(f"{server.base_url}/healthz", interval=PROBE_INTERVAL) as probe:
            storm = run.load(
                "POST /v1/auth/login",
                server,
                "/v1/auth/login",
                duration=run.duration,
                connections=LOGIN_CONNECTIONS,
                request_lua=_login_lua(bodies),
                pinning=unpinned,
            )
        during = probe.summary()
    run.say("argon2id verify ceiling (2nd half)")
    with run.watch("argon2 ceiling (2nd half)"):
        after = verify_for(parameters, duration=run.half)
    _report_login(run, parameters, (before, after), storm, idle, during)
    run.report.details["login"] = {
        "pinning": unpinned.description,
        "users": LOGIN_USERS,
        "connections": LOGIN_CONNECTIONS,
        "verify_ceiling": {"before_per_s": round(before.per_second, 2), "after_per_s": round(after.per_second, 2)},
        "storm": storm.as_dict(),
        "healthz_idle": idle.as_dict(),
        "healthz_during_storm": during.as_dict(),
    }


def _login_users(server: Server) -> list[str]:
    """Sign up ``LOGIN_USERS`` accounts and check that one can log in; their login bodies as JSON."""
    credentials = [(f"storm-{number}@bench.example.com", _password()) for number in range(LOGIN_USERS)]
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for email, password in credentials:
            tenantry_account(client, email, password)
        tenantry_token(client, *credentials[0])
    return [json.dumps({"email": email, "password": password}) for email, password in credentials]


def _login_lua(bodies: list[str]) -> str:
    items = ",\n  ".join(wrk.lua_string(body) for body in bodies)
    return f"""
local bodies = {{
  {items}
}}
local headers = {{ ["Content-Type"] = "application/json" }}
local n = 0
request = function()
  n = n % #bodies + 1
  return wrk.format("POST", nil, headers, bodies[n])
end
"""


def _probe(url: str, *, seconds: float) -> LatencySummary:
    with LatencyProbe(url, interval=PROBE_INTERVAL) as probe:
        threading.Event().wait(seconds)
    return probe.summary()


def _report_login(
    run: Run,
    parameters: HashingParameters,
    halves: tuple[Verifications, Verifications],
    storm: wrk.WrkResult,
    idle: LatencySummary,
    during: LatencySummary,
) -> None:
    report = run.report
    before, after = halves
    ceiling = report.add(
        Figure(
            "argon2_verify_ceiling",
            "argon2id verify ceiling",
            (before + after).per_second,
            "verifies/s",
            note=f"{parameters.describe()}, no server; {before.per_second:.1f} before, {after.per_second:.1f} after",
        )
    )
    report.add(
        Figure(
            "tenantry_logins_per_second",
            "Tenantry POST /v1/auth/login",
            storm.ok_per_second,
            "logins/s",
            baseline=ceiling,
            target=Target(">=", 0.8),
            note=_note(
                f"{LOGIN_CONNECTIONS} concurrent, not pinned; p50 {storm.p50_ms:.0f} ms, p99 {storm.p99_ms:.0f} ms",
                storm,
            ),
        )
    )
    quiet = report.add(
        Figure(
            "healthz_p99_idle_ms",
            "GET /healthz p99, idle",
            idle.p99_ms,
            "ms",
            note=f"p50 {idle.p50_ms:.2f} ms, max {idle.max_ms:.2f} ms, {idle.count} probes",
        )
    )
    errors = f", {during.errors} failed" if during.errors else ""
    report.add(Figure("healthz_p50_storm_ms", "GET /healthz p50, login storm", during.p50_ms, "ms"))
    report.add(
        Figure(
            "healthz_p99_storm_ms",
            "GET /healthz p99, login storm",
            during.p99_ms,
            "ms",
            baseline=quiet,
            target=Target("<", 20, applies_to="value"),
            note=f"{during.count} probes, one every {PROBE_INTERVAL * 1000:.0f} ms{errors}",
        )
    )
    report.add(Figure("healthz_max_storm_ms", "GET /healthz max, login storm", during.max_ms, "ms"))


BENCHMARKS: dict[str, Callable[[Run], None]] = {"me": bench_me, "login": bench_login}
