"""Retention of the delivery log: finished deliveries go with their attempts; pending ones never do."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from tenantry.core.clock import utcnow
from tenantry.db import scope
from tenantry.platform import Platform
from tenantry.settings import Settings
from tenantry.webhooks.models import Attempt, Delivery
from tests.events.test_retention import count
from tests.factories.tenancy import create_org, create_team
from tests.webhooks.receiver import Receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True})


async def test_finished_deliveries_go_with_their_attempts_and_pending_ones_stay(
    client: httpx.AsyncClient, platform: Platform, receiver: Receiver
) -> None:
    org = await create_org(client)
    response = await client.post(
        org.path("/webhooks"),
        json={"url": receiver.url("/old"), "event_types": ["team.created"]},
        headers=org.owner.headers,
    )
    assert response.status_code == 201
    await create_team(client, org, name="Delivered long ago")
    await receiver.wait_for(lambda: len(receiver.at("/old")) == 1)
    await platform.drain()
    async with platform.db.transaction() as tx:
        await scope.unscoped(tx)
        await tx.execute(update(Delivery).values(finished_at=utcnow() - timedelta(days=31)))
    async with platform.db.transaction() as tx:  # a delivery still owed: never forgotten, however old
        await scope.unscoped(tx)
        (row,) = (await tx.scalars(select(Delivery))).all()
        pending = Delivery(
            org_id=row.org_id,
            endpoint_id=row.endpoint_id,
            event_id=row.id,
            event_type="team.created",
            payload="{}",
            next_attempt_at=utcnow() + timedelta(days=1),
            created_at=utcnow() - timedelta(days=60),
        )
        tx.add(pending)
    assert await count(platform, Attempt) == 1

    removed = await platform.sweeper.sweep_once()

    assert removed["webhook_deliveries"] == 1
    assert await count(platform, Attempt) == 0
    async with platform.db.transaction() as tx:
        await scope.unscoped(tx)
        assert [d.status for d in (await tx.scalars(select(Delivery))).all()] == ["pending"]
