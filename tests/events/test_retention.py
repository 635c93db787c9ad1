"""Retention: old outbox events, finished jobs and finished webhook deliveries go; nothing still needed does."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update

from tenantry.core.clock import utcnow
from tenantry.db import scope
from tenantry.events.models import ConsumerCursor, OutboxEvent
from tenantry.platform import Platform
from tests.factories.tenancy import create_org, create_team


async def count(platform: Platform, model: type[Any]) -> int:
    async with platform.db.transaction() as tx:
        await scope.unscoped(tx)
        return int(await tx.scalar(select(func.count()).select_from(model)) or 0)


async def _age_everything(platform: Platform, days: int) -> None:
    then = utcnow() - timedelta(days=days)
    async with platform.db.transaction() as tx:
        await scope.unscoped(tx)
        await tx.execute(update(OutboxEvent).values(occurred_at=then))


async def test_old_events_go_once_every_consumer_has_read_them(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    await create_team(client, org)
    await platform.drain()
    before = await count(platform, OutboxEvent)
    await _age_everything(platform, days=31)
    async with platform.db.transaction() as tx:  # one consumer is behind: the newest event is unread by it
        newest = await tx.scalar(select(func.max(OutboxEvent.id)))
        await tx.execute(update(ConsumerCursor).where(ConsumerCursor.name == "audit").values(position=newest - 1))

    removed = await platform.sweeper.sweep_once()

    assert removed["events"] == before - 1
    assert await count(platform, OutboxEvent) == 1


async def test_recent_events_stay(client: httpx.AsyncClient, platform: Platform) -> None:
    await create_org(client)
    await platform.drain()
    before = await count(platform, OutboxEvent)

    removed = await platform.sweeper.sweep_once()

    assert removed["events"] == 0
    assert await count(platform, OutboxEvent) == before > 0
