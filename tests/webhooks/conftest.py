"""Fixtures of the webhook tests: a receiver on loopback, a server that never answers, a private PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.webhooks.pg_cluster import PgCluster
from tests.webhooks.receiver import Receiver, SilentServer


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as found:
        yield found


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    async with SilentServer() as found:
        yield found


@pytest.fixture
async def pg_cluster() -> AsyncIterator[PgCluster]:
    """A PostgreSQL server of the test's own, running, with an empty database ``tenantry``; deleted afterwards."""
    cluster = PgCluster()
    try:
        await asyncio.to_thread(cluster.init)
        await asyncio.to_thread(cluster.start)
        await cluster.create_database()
        yield cluster
    finally:
        await asyncio.to_thread(cluster.destroy)
