"""Fan-out: the outbox consumer that turns each organization event into one delivery per matching endpoint.

It runs in the dispatcher's transaction, the one that also moves the consumer's cursor: the
deliveries exist if and only if the cursor moved past their event, so none is lost and, since the
dispatcher hands events over at least once, a unique key makes a second fan-out of an event a no-op.
The body is fixed here, once, so every attempt of a delivery sends (and signs) the same bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.ids import new_id
from tenantry.db import scope
from tenantry.db.upsert import insert_ignoring_conflicts
from tenantry.events.models import OutboxEvent
from tenantry.webhooks.events import WEBHOOK_TEST
from tenantry.webhooks.models import PENDING, Delivery, Endpoint

CONSUMER = "webhooks"
WOKEN = "webhooks"  # session.info mark: deliveries were written, wake the deliverer after commit


def body(event: OutboxEvent) -> str:
    """The request body of an event, as Standard Webhooks lays it out."""
    return orjson.dumps(
        {"type": event.type, "timestamp": event.occurred_at.isoformat(), "data": event.data}, default=str
    ).decode()


def _wants(endpoint: Endpoint, event: OutboxEvent) -> bool:
    if event.occurred_at < endpoint.created_at:  # an endpoint hears what happens from its creation on
        return False
    if event.type == WEBHOOK_TEST:  # a test goes to the endpoint it names, and only there
        return str(endpoint.id) == event.data.get("endpoint_id")
    return endpoint.event_types is None or event.type in endpoint.event_types


async def unscoped_fan_out(tx: AsyncSession, events: Sequence[OutboxEvent]) -> None:
    """Outbox consumer: one pending delivery per (event, matching enabled endpoint of its organization).
    A batch spans organizations, so it reads and writes unscoped."""
    org_ids = {event.org_id for event in events if event.org_id is not None}
    if not org_ids:
        return
    await scope.unscoped(tx)
    query = select(Endpoint).where(Endpoint.org_id.in_(org_ids), Endpoint.is_enabled.is_(True))
    by_org: dict[uuid.UUID, list[Endpoint]] = {}
    for endpoint in (await tx.scalars(query)).all():
        by_org.setdefault(endpoint.org_id, []).append(endpoint)
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for event in events:
        wanting = [e for e in by_org.get(event.org_id, ()) if _wants(e, event)] if event.org_id else []
        if not wanting:
            continue
        payload = body(event)
        rows += [
            {
                "id": new_id(),
                "org_id": event.org_id,
                "endpoint_id": endpoint.id,
                "event_id": event.event_id,
                "event_type": event.type,
                "payload": payload,
                "status": PENDING,
                "attempt_count": 0,
                "is_one_shot": False,
                "next_attempt_at": now,
                "created_at": now,
            }
            for endpoint in wanting
        ]
    if rows:
        await insert_ignoring_conflicts(tx, Delivery.__table__, rows)  # type: ignore[arg-type]
        tx.info[WOKEN] = True
