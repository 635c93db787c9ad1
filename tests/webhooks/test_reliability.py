"""Webhooks survive crashes: real ``tenantry`` processes, 1,000 events, and a receiver on loopback.

The events are queued while nothing delivers (``TENANTRY_EMBEDDED_WORKER=false``), then a deliverer
starts. Once the receiver has answered some of them, it holds the next requests unanswered, and
the crash comes with those requests in flight: the delivering process is killed with SIGKILL (a
``tenantry worker`` on PostgreSQL, ``tenantry serve`` with its embedded worker on SQLite), or the
PostgreSQL server itself stops as in a power cut. After the restart every event reaches the
receiver, which, deduplicating by ``webhook-id`` as a subscriber does, finds each one exactly once,
signed so that Standard Webhooks' own verifier accepts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories.tenancy import Org, create_org, create_team
from tests.servers import BASE_URL, TENANTRY, Fleet, tenantry, tenantry_env
from tests.webhooks.pg_cluster import PgCluster
from tests.webhooks.receiver import Hold, Receiver, answer, in_turn

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EVENTS = 1000
ANSWERED_BEFORE_THE_CRASH = 150
PATH = "/hooks"
# Room for a crash's worth of failed attempts: no delivery may run out of retries in these tests.
SCHEDULE = ",".join(["1"] * 10)
WITHIN = 180.0  # for everything to arrive after the restart (leases of the dead process must run out first)


def note(what: str) -> None:
    """A line of the test's story with its time (pytest shows it when the test fails)."""
    print(f"{time.monotonic():.2f} {what}")


def webhook_env(database_url: str, tmp_path: Path, *, delivering: bool) -> dict[str, str]:
    return tenantry_env(
        database_url=database_url,
        data_dir=str(tmp_path / "data"),
        base_url=BASE_URL,
        embedded_worker="true" if delivering else "false",
        webhook_allow_private="true",
        webhook_retry_schedule=SCHEDULE,
        webhook_timeout_seconds="2",
    )


class Workers:
    """``tenantry worker`` processes of one test, each in a session of its own; ``stop()`` ends those left."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.directory / f"worker-{len(self.started)}.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [TENANTRY, "worker"],
                env=env,
                cwd=self.directory,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append((process, log))
        return process

    def stop(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.terminate()
        for process, log in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                kill(process)
            print(f"--- worker {process.pid}, exit {process.returncode} ---\n{log.read_text(errors='replace')}")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    found = Workers(tmp_path)
    yield found
    found.stop()


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the process and everything it started (it leads a session of its own)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    note(f"killed {process.pid}")


async def queue_team_events(
    http: httpx.AsyncClient, receiver: Receiver, count: int = EVENTS
) -> tuple[Org, dict[str, Any], list[str]]:
    """An organization with an endpoint at the receiver's PATH, and ``count`` teams made in it (their ids)."""
    note("queuing events")
    org = await create_org(http)
    created = await http.post(
        org.path("/webhooks"),
        json={"url": receiver.url(PATH), "event_types": ["team.created"]},
        headers=org.owner.headers,
    )
    assert created.status_code == 201, created.text
    endpoint: dict[str, Any] = created.json()
    receiver.trust(PATH, endpoint["secret"])
    at_once = asyncio.Semaphore(16)

    async def one(number: int) -> str:
        async with at_once:
            return await create_team(http, org, name=f"Team {number:04d}")

    team_ids = list(await asyncio.gather(*(one(n) for n in range(count))))
    note(f"{count} events queued")
    return org, endpoint, team_ids


def gate(receiver: Receiver, *, status: int = 503, answered: int = ANSWERED_BEFORE_THE_CRASH) -> Hold:
    """Answer the first ``answered`` deliveries, then hold the next ones (answered ``status`` once released)."""
    hold = receiver.hold(status)
    receiver.route(PATH, in_turn(*[answer(200)] * answered, hold))
    return hold


async def deliveries_in_flight(receiver: Receiver, hold: Hold) -> None:
    await receiver.wait_for(lambda: hold.waiting > 0, within=60, what="deliveries held in flight")
    await asyncio.sleep(0.3)  # let the process send what it has at hand
    note(f"{hold.waiting} deliveries held in flight; {receiver.summary()}")


async def after_the_crash(receiver: Receiver, hold: Hold) -> float:
    """Once what the dead process sent has been read (and held), answer 200 again; returns when that was."""
    await asyncio.sleep(0.5)
    since = time.monotonic()
    reopen(receiver, hold)
    return since


def reopen(receiver: Receiver, hold: Hold) -> None:
    """Answer 200 from now on, and let the held requests go (to whoever is still listening)."""
    receiver.route(PATH, answer(200))
    hold.release()


async def get(http: httpx.AsyncClient, path: str, org: Org, *, within: float, **params: str) -> dict[str, Any]:
    """A GET that may meet a server still reconnecting to its database: retried until it answers 200."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.TransportError):
            response = await http.get(path, params=params, headers=org.owner.headers)
            if response.status_code == 200:
                found: dict[str, Any] = response.json()
                return found
            assert response.status_code >= 500, response.text
            note(f"GET {path}: {response.status_code} {response.text[:200]}")
        assert time.monotonic() < deadline, f"GET {path} did not answer 200 within {within}s"
        await asyncio.sleep(0.5)


async def all_deliveries(
    http: httpx.AsyncClient, org: Org, endpoint: dict[str, Any], **params: str
) -> list[dict[str, Any]]:
    path, items, cursor = org.path(f"/webhooks/{endpoint['id']}/deliveries"), [], None
    while True:
        page = await get(http, path, org, within=60, limit="100", **params, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


async def assert_each_event_received_once(
    http: httpx.AsyncClient, org: Org, endpoint: dict[str, Any], receiver: Receiver, team_ids: list[str]
) -> list[dict[str, Any]]:
    """Every event acknowledged by the receiver and shown succeeded; the distinct ids are the events' ids."""
    note("waiting for every event")
    await receiver.wait_for(
        lambda: len(receiver.ids(PATH, acknowledged=True)) >= len(team_ids),
        within=WITHIN,
        what="every event acknowledged",
    )
    note("every event acknowledged")
    deadline = time.monotonic() + 60
    while await all_deliveries(http, org, endpoint, status="pending"):  # the last successes being recorded
        assert time.monotonic() < deadline, "deliveries still pending a minute after the receiver had them all"
        await asyncio.sleep(0.5)
    delivered = await all_deliveries(http, org, endpoint)
    requests = receiver.at(PATH)

    assert len(delivered) == len(team_ids)
    assert Counter(d["status"] for d in delivered) == {"succeeded": len(team_ids)}
    assert receiver.ids(PATH) == receiver.ids(PATH, acknowledged=True) == {d["event_id"] for d in delivered}
    assert {r.json()["data"]["team"]["id"] for r in requests} == set(team_ids)
    unverified = [r.headers for r in requests if r.verified is not True]
    assert not unverified, f"{len(unverified)} signature(s) refused by standardwebhooks, e.g. {unverified[0]}"
    # One event, one body: a retry sends the very bytes of the first attempt.
    bodies: dict[str, set[bytes]] = {}
    for request in requests:
        bodies.setdefault(request.webhook_id, set()).add(request.body)
    assert {len(found) for found in bodies.values()} == {1}
    print(f"{len(requests)} requests for {len(team_ids)} events ({len(requests) - len(team_ids)} resent)")
    return delivered


def acknowledged_twice_since(receiver: Receiver, since: float) -> dict[str, int]:
    """Events the receiver acknowledged more than once after ``since``."""
    counts = Counter(r.webhook_id for r in receiver.at(PATH) if r.acknowledged and r.at > since)
    return {event_id: count for event_id, count in counts.items() if count > 1}


def held_ids(receiver: Receiver) -> set[str]:
    return {r.webhook_id for r in receiver.at(PATH) if r.held}


async def test_kill_9_of_serve_delivering_in_process_loses_no_event_on_sqlite(
    tmp_path: Path, fleet: Fleet, receiver: Receiver
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tenantry.db'}"
    (api,) = await fleet.start(webhook_env(url, tmp_path, delivering=False))
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
        org, endpoint, team_ids = await queue_team_events(http, receiver)
        assert receiver.requests == []  # nothing delivers yet
        hold = gate(receiver)

        (deliverer,) = await fleet.start(webhook_env(url, tmp_path, delivering=True))
        await deliveries_in_flight(receiver, hold)
        kill(deliverer.process)
        restarted = await after_the_crash(receiver, hold)
        in_flight = held_ids(receiver)
        await fleet.start(webhook_env(url, tmp_path, delivering=True))

        await assert_each_event_received_once(http, org, endpoint, receiver, team_ids)

    assert in_flight, "no delivery was in flight when the process was killed"
    assert in_flight <= receiver.ids(PATH, acknowledged=True)
    assert not acknowledged_twice_since(receiver, restarted), "a delivery was sent again after it was acknowledged"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_kill_9_of_a_worker_loses_no_event_and_two_workers_share_the_rest_on_postgresql(
    database_url: str, tmp_path: Path, fleet: Fleet, workers: Workers, receiver: Receiver
) -> None:
    env = webhook_env(database_url, tmp_path, delivering=False)
    (api,) = await fleet.start(env)
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
        org, endpoint, team_ids = await queue_team_events(http, receiver)
        assert receiver.requests == []  # serve does not deliver: the workers do
        hold = gate(receiver)

        first = workers.start(env)
        await deliveries_in_flight(receiver, hold)
        kill(first)
        await asyncio.sleep(0.5)  # what the dead worker sent is read (and held)
        restarted = time.monotonic()
        in_flight = held_ids(receiver)
        # Two workers now, claiming from the same table: neither may send what the other holds. Their first
        # requests are held until both are seen sending at the same time.
        hold_both = receiver.hold()
        receiver.route(PATH, hold_both)
        hold.release()
        both = {workers.start(env).pid, workers.start(env).pid}
        await receiver.wait_for(
            lambda: receiver.senders([r for r in receiver.at(PATH) if r.at > restarted], both) == both,
            within=60,
            what="both workers sending",
        )
        note("both workers sending")
        reopen(receiver, hold_both)

        await assert_each_event_received_once(http, org, endpoint, receiver, team_ids)

    assert in_flight, "no delivery was in flight when the worker was killed"
    assert in_flight <= receiver.ids(PATH, acknowledged=True)
    assert not acknowledged_twice_since(receiver, restarted), "a delivery was sent again after it was acknowledged"


async def test_a_postgresql_crash_mid_run_loses_no_event(
    pg_cluster: PgCluster, tmp_path: Path, fleet: Fleet, workers: Workers, receiver: Receiver
) -> None:
    """The machine's PostgreSQL serves other tests: this one crashes a private server of its own."""
    env = webhook_env(pg_cluster.url(), tmp_path, delivering=False)
    migrated = await tenantry("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated
    (api,) = await fleet.start(env)
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
        org, endpoint, team_ids = await queue_team_events(http, receiver)
        # Released once the database is down: successes that the worker cannot record yet.
        hold = gate(receiver, status=200)

        worker = workers.start(env)
        await deliveries_in_flight(receiver, hold)
        await asyncio.to_thread(pg_cluster.stop, "immediate")  # every connection cut, no checkpoint: a crash
        note("PostgreSQL stopped")
        in_flight = held_ids(receiver)
        reopen(receiver, hold)
        await asyncio.sleep(2)  # the worker finds the database gone, and must keep trying
        await asyncio.to_thread(pg_cluster.start)
        note("PostgreSQL started again")

        await assert_each_event_received_once(http, org, endpoint, receiver, team_ids)

    assert in_flight, "no delivery was in flight when the database stopped"
    assert in_flight <= receiver.ids(PATH, acknowledged=True)
    assert worker.poll() is None, "the worker exited when its database went away"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_sigterm_lets_a_worker_finish_its_requests_in_flight_then_leave(
    database_url: str, tmp_path: Path, fleet: Fleet, workers: Workers, receiver: Receiver
) -> None:
    """What a process manager sends to stop a worker (systemd, Kubernetes, a rolling deploy)."""
    env = webhook_env(database_url, tmp_path, delivering=False)
    (api,) = await fleet.start(env)
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
        org, endpoint, team_ids = await queue_team_events(http, receiver, count=100)
        hold = gate(receiver, status=200, answered=20)
        worker = workers.start(env)
        await deliveries_in_flight(receiver, hold)

        worker.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert worker.poll() is None, f"the worker did not wait for its requests in flight (exit {worker.returncode})"
        in_flight = [r for r in receiver.at(PATH) if r.held]
        reopen(receiver, hold)  # they are answered 200 now, while it still listens
        released = time.monotonic()
        deadline = released + 30
        while worker.poll() is None:
            assert time.monotonic() < deadline, "the worker did not leave within 30 s of SIGTERM"
            await asyncio.sleep(0.1)
        workers.start(env)  # for what it held but had not started

        await assert_each_event_received_once(http, org, endpoint, receiver, team_ids)

    assert worker.returncode == 0
    assert all(r.acknowledged for r in in_flight)
    answered = {r.webhook_id for r in in_flight}
    assert not [r for r in receiver.at(PATH) if r.webhook_id in answered and r.at > released], "sent again"
