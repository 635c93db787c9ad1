"""A database outage is a 503 to wait out, never a 500: while PostgreSQL is down, and on the first
requests after it comes back (the pool's connections to the old server are dead)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tenantry.app import create_app
from tenantry.db import migrate
from tenantry.settings import Settings
from tests.factories.identity import signed_in
from tests.webhooks.pg_cluster import PgCluster

pytestmark = pytest.mark.slow


async def test_requests_during_and_after_a_postgresql_restart_are_503_then_served(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    url = pg_cluster.url()
    await asyncio.to_thread(migrate.upgrade, url)
    settings = Settings(database_url=url, data_dir=tmp_path / "data", base_url="http://testserver", log_level="error")
    app = create_app(settings, access_log=False)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        account = await signed_in(client)
        await asyncio.to_thread(pg_cluster.stop, "immediate")

        during = await client.post("/v1/auth/login", json={"email": account.email, "password": account.password})

        await asyncio.to_thread(pg_cluster.start)
        after = []
        for _ in range(5):  # each dead pooled connection may fail once, then is replaced
            after.append(
                await client.post("/v1/auth/login", json={"email": account.email, "password": account.password})
            )
            if after[-1].status_code == 200:
                break

    assert during.status_code == 503, during.text
    assert during.json()["code"] == "unavailable"
    assert during.headers["retry-after"] == "1"
    assert after[-1].status_code == 200, [r.text for r in after]
    assert {r.status_code for r in after[:-1]} <= {503}
