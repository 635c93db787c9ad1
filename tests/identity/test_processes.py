"""Revocation across real ``tenantry serve`` processes.

Each process answers ``/v1/me`` from its own memory. A session ended on one process (logout, or
deleting it from the session list) must be refused by every other process on its very next request:
no sleep, no retry. Three shapes carry that news: processes sharing a data dir (a file in it), a
cluster with separate disks (Redis pub/sub), and the workers of one ``serve --workers 2``.
"""

from __future__ import annotations

import shutil
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.factories.identity import Account, signed_in, signup
from tests.servers import BASE_URL, Fleet, Server, tenantry_env

pytestmark = pytest.mark.slow


async def me(http: httpx.AsyncClient, account: Account) -> int:
    response = await http.get("/v1/me", headers=account.headers)
    if response.status_code == 401:
        assert response.json()["code"] == "unauthorized", response.text
    return response.status_code


async def assert_revocations_reach_each_other(a: Server, b: Server) -> None:
    """Logout on A is refused by B at once; a session deleted on B is refused by A at once."""
    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        leaving, deleted, staying = [await signed_in(on_a) for _ in range(3)]
        for account in (leaving, deleted, staying):  # both processes now hold these sessions in memory
            assert (await me(on_a, account), await me(on_b, account)) == (200, 200)

        assert (await on_a.post("/v1/auth/logout", headers=leaving.headers)).status_code == 204
        assert await me(on_b, leaving) == 401
        assert await me(on_a, leaving) == 401

        listed = (await on_b.get("/v1/me/sessions", headers=deleted.headers)).json()["items"]
        current = next(session["id"] for session in listed if session["current"])
        assert (await on_b.delete(f"/v1/me/sessions/{current}", headers=deleted.headers)).status_code == 204
        assert await me(on_a, deleted) == 401
        assert await me(on_b, deleted) == 401

        # Someone else's session is not collateral damage.
        assert (await me(on_a, staying), await me(on_b, staying)) == (200, 200)


async def test_two_servers_sharing_a_data_dir_refuse_an_ended_session_at_once(
    database_url: str, tmp_path: Path, fleet: Fleet
) -> None:
    env = tenantry_env(database_url=database_url, data_dir=str(tmp_path / "data"), base_url=BASE_URL)

    a, b = await fleet.start(env, env)

    await assert_revocations_reach_each_other(a, b)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_with_redis_two_servers_on_separate_disks_refuse_an_ended_session_at_once(
    database_url: str, tmp_path: Path, fleet: Fleet
) -> None:
    """Separate data dirs, so no file can carry the news: only Redis does. Only the signing keys are copied."""
    env_a = tenantry_env(
        database_url=database_url, data_dir=str(tmp_path / "a"), redis_url=REDIS_URL, base_url=BASE_URL
    )
    env_b = tenantry_env(
        database_url=database_url, data_dir=str(tmp_path / "b"), redis_url=REDIS_URL, base_url=BASE_URL
    )
    (a,) = await fleet.start(env_a)
    shutil.copytree(tmp_path / "a" / "keys", tmp_path / "b" / "keys")
    (b,) = await fleet.start(env_b)

    await assert_revocations_reach_each_other(a, b)

    # Sign-in failures count against one budget for the whole fleet, not one per process.
    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        victim = await signup(on_a)
        for http in (on_a, on_b) * 5:
            guess = await http.post("/v1/auth/login", json={"email": victim.email, "password": "wrong guess"})
            assert guess.status_code == 401
        right = await on_b.post("/v1/auth/login", json={"email": victim.email, "password": victim.password})
        assert right.status_code == 429


@dataclass
class Pinned:
    """A keep-alive connection known to be served by one worker process."""

    http: httpx.AsyncClient
    client_port: int
    worker: int

    async def me(self, account: Account) -> int:
        response = await self.http.get("/v1/me", headers=account.headers)
        assert _client_port(response) == self.client_port, "the connection was reopened: it may reach another worker"
        return response.status_code


def _client_port(response: httpx.Response) -> int:
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


async def pin_every_worker(server: Server, account: Account, stack: AsyncExitStack, *, workers: int) -> list[Pinned]:
    """Open connections until each worker holds one that has served ``account`` (so each has it in memory)."""
    pinned: dict[int, Pinned] = {}
    for _ in range(100):
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=1))
        )
        response = await http.get("/v1/me", headers=account.headers)
        assert response.status_code == 200, response.text
        port = _client_port(response)
        worker = server.owner_of(port)
        if worker is not None and worker != server.process.pid and worker not in pinned:
            pinned[worker] = Pinned(http, port, worker)
        if len(pinned) == workers:
            return list(pinned.values())
    raise AssertionError(f"only {len(pinned)} of {workers} workers ever accepted a connection")


async def me_on_a_new_connection(server: Server, account: Account) -> int:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await me(http, account)


async def test_every_worker_of_one_server_refuses_a_logged_out_session(
    migrated_databases: dict[str, str], tmp_path: Path, fleet: Fleet
) -> None:
    env = tenantry_env(database_url=migrated_databases["sqlite"], data_dir=str(tmp_path / "data"), base_url=BASE_URL)
    (server,) = await fleet.start(env, workers=2)

    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=server.url))
        account = await signed_in(http)
        # New connections, spread over the workers by the kernel: all of them know the session.
        assert [await me_on_a_new_connection(server, account) for _ in range(20)] == [200] * 20
        # And, to be sure no worker went unasked, one kept-alive connection per worker that has served it.
        pinned = await pin_every_worker(server, account, stack, workers=2)

        assert (await http.post("/v1/auth/logout", headers=account.headers)).status_code == 204

        assert [await connection.me(account) for connection in pinned] == [401, 401]
        assert [await me_on_a_new_connection(server, account) for _ in range(20)] == [401] * 20
