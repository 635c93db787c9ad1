"""The identity benchmarks: who-am-I throughput, a peer comparison, and a login storm.

- ``me``: ``GET /v1/me`` on one ``tenantry serve --workers 1`` process, against the same process's
  ``GET /healthz`` (the framework's own floor), then against ``GET /users/me`` of a minimal
  fastapi-users application on the same SQLite footing.
- ``login``: the machine's raw argon2id verification ceiling, then ``POST /v1/auth/login`` with
  correct passwords at a concurrency of 8, while a probe times ``GET /healthz`` every 20 ms.

Each benchmark starts its own servers on fresh temporary data and stops them before it returns.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from bench import wrk
from bench.hashing import HashingParameters, verifications_per_second
from bench.probe import LatencyProbe, LatencySummary
from bench.report import Figure, Report, Target
from bench.servers import HOST, Pinning, Server, free_port

REPO = Path(__file__).resolve().parent.parent
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

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{message}[/dim]", highlight=False)

    def load(self, url: str, *, duration: float, pinning: Pinning | None = None, **options: Any) -> wrk.WrkResult:
        return wrk.run(self.wrk, url, duration=duration, pinning=pinning or self.pinning, **options)


# -- servers ---------------------------------------------------------------------------------------
def _clean_env(**extra: str) -> dict[str, str]:
    # Inherited TENANTRY_* variables (a Redis URL, other argon2 costs) would change what is measured.
    env = {name: value for name, value in os.environ.items() if not name.startswith("TENANTRY_")}
    env.update(extra)
    return env


def tenantry_server(run: Run, name: str, *, pinning: Pinning) -> Server:
    """A ``tenantry serve --workers 1`` on its own temporary data dir and SQLite file."""
    port = free_port()
    data_dir = run.workdir / f"tenantry-{name}"
    data_dir.mkdir()
    env = _clean_env(
        TENANTRY_DATA_DIR=str(data_dir),
        TENANTRY_DATABASE_URL=f"sqlite+aiosqlite:///{data_dir / 'tenantry.db'}",
        TENANTRY_LOG_LEVEL="warning",
        TENANTRY_BASE_URL=f"http://{HOST}:{port}",
    )
    script = Path(sys.executable).with_name("tenantry")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tenantry"]
    argv = [*command, "serve", "--host", HOST, "--port", str(port), "--workers", "1"]
    return Server(
        f"tenantry serve ({name})",
        pinning.server(argv),
        port=port,
        env=env,
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
    _expect(
        client.post("/v1/auth/signup", json={"email": email, "password": password, "name": "Bench User"}),
        201,
        f"sign-up of {email}",
    )


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


# -- me --------------------------------------------------------------------------------------------
def bench_me(run: Run) -> None:
    """``GET /v1/me`` against ``GET /healthz`` of the same server, then against fastapi-users."""
    me = _bench_tenantry_me(run)
    _bench_fastapi_users_me(run, me)


def _bench_tenantry_me(run: Run) -> Figure:
    report = run.report
    with tenantry_server(run, "me", pinning=run.pinning) as server, httpx.Client(base_url=server.base_url) as client:
        email, password = "me@bench.example.com", _password()
        tenantry_account(client, email, password)
        headers = _authorized(client, "/v1/me", tenantry_token(client, email, password))
        run.say(f"Tenantry GET /healthz and GET /v1/me: wrk -c{ME_CONNECTIONS}, {run.pinning.description}")
        run.load(f"{server.base_url}/v1/me", duration=run.warmup, connections=ME_CONNECTIONS, headers=headers)
        healthz = run.load(f"{server.base_url}/healthz", duration=run.duration, connections=ME_CONNECTIONS)
        me = run.load(f"{server.base_url}/v1/me", duration=run.duration, connections=ME_CONNECTIONS, headers=headers)
    pinned = "pinned" if run.pinning.is_used else "not pinned"
    baseline = report.add(
        Figure(
            "tenantry_healthz_rps",
            "Tenantry GET /healthz",
            healthz.ok_per_second,
            "req/s",
            note=_note(f"1 worker, {pinned}", healthz),
        )
    )
    figure = report.add(
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
    report.details["me"] = {"pinning": run.pinning.description, "healthz": healthz.as_dict(), "me": me.as_dict()}
    return figure


def _bench_fastapi_users_me(run: Run, tenantry_me: Figure) -> None:
    report = run.report
    with fastapi_users_server(run) as server, httpx.Client(base_url=server.base_url) as client:
        headers = _authorized(client, "/users/me", fastapi_users_token(client, "me@bench.example.com", _password()))
        run.say(f"fastapi-users GET /users/me: wrk -c{ME_CONNECTIONS}, {run.pinning.description}")
        run.load(f"{server.base_url}/users/me", duration=run.warmup, connections=ME_CONNECTIONS, headers=headers)
        peer = run.load(
            f"{server.base_url}/users/me", duration=run.duration, connections=ME_CONNECTIONS, headers=headers
        )
    baseline = report.add(
        Figure(
            "fastapi_users_me_rps",
            "fastapi-users GET /users/me",
            peer.ok_per_second,
            "req/s",
            note=_note(f"p50 {peer.p50_ms:.1f} ms, p99 {peer.p99_ms:.1f} ms", peer),
        )
    )
    report.add(
        Figure(
            "tenantry_me_vs_fastapi_users",
            "Tenantry GET /v1/me vs peer",
            tenantry_me.value,
            "req/s",
            baseline=baseline,
            target=Target(">=", 1.5),
        )
    )
    report.details["fastapi_users"] = {"pinning": run.pinning.description, "me": peer.as_dict()}


def _note(text: str, result: wrk.WrkResult) -> str:
    return f"{text}; {result.problems}" if result.problems else text


# -- login -----------------------------------------------------------------------------------------
def bench_login(run: Run) -> None:
    """Logins per second against the raw argon2 ceiling, and ``/healthz`` latency during the storm."""
    parameters = HashingParameters.tenantry_defaults()
    run.say(f"argon2id verify ceiling: {parameters.describe()}, no server running")
    ceiling = run.report.add(
        Figure(
            "argon2_verify_ceiling",
            "argon2id verify ceiling",
            verifications_per_second(parameters, duration=run.duration),
            "verifies/s",
            note=f"{parameters.describe()}, no server running",
        )
    )
    # The server hashes on two threads besides its event loop: pinned to one core it would measure the pin.
    unpinned = Pinning.none("the server's argon2 threads need both cores")
    with tenantry_server(run, "login", pinning=unpinned) as server:
        bodies = _login_users(server)
        idle = _probe(f"{server.base_url}/healthz", seconds=min(3.0, max(1.0, run.duration / 4)))
        run.say(f"Login storm: wrk -c{LOGIN_CONNECTIONS}, {len(bodies)} users, /healthz probe, {unpinned.description}")
        with LatencyProbe(f"{server.base_url}/healthz", interval=PROBE_INTERVAL) as probe:
            storm = run.load(
                f"{server.base_url}/v1/auth/login",
                duration=run.duration,
                connections=LOGIN_CONNECTIONS,
                request_lua=_login_lua(bodies),
                pinning=unpinned,
            )
        during = probe.summary()
    _report_login(run, ceiling, storm, idle, during, unpinned)


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
    ceiling: Figure,
    storm: wrk.WrkResult,
    idle: LatencySummary,
    during: LatencySummary,
    pinning: Pinning,
) -> None:
    report = run.report
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
    report.details["login"] = {
        "pinning": pinning.description,
        "users": LOGIN_USERS,
        "connections": LOGIN_CONNECTIONS,
        "storm": storm.as_dict(),
        "healthz_idle": idle.as_dict(),
        "healthz_during_storm": during.as_dict(),
    }


BENCHMARKS: dict[str, Callable[[Run], None]] = {"me": bench_me, "login": bench_login}
