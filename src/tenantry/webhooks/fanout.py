"""Fan-out: the outbox consumer that turns each organization event into one delivery per matching endpoint.

It runs in the dispatcher's transaction, the one that also moves the consumer's cursor: the
deliveries exist if and only if the cursor moved past their event, so none is lost and, since the
dispatcher hands events over at least once, a unique key makes a second fan-out of an event a no-op.
The body is fixed here, once, so every attempt of a delivery sends (and signs) the same bytes.

When this process delivers too, the deliveries it has room for are leased to it here, in the same
transaction, and handed to its deliverer after the commit (``HANDED``): the first attempt needs no
claim, which is most of a webhook's latency and of its database work.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.ids import new_id
from tenantry.db import scope
from tenantry.db.upsert import insert_new
from tenantry.events.models import OutboxEvent
from tenantry.webhooks.events import WEBHOOK_TEST
from tenantry.webhooks.models import PENDING, Delivery, Endpoint
from tenantry.webhooks.work import Claimed, Job

if TYPE_CHECKING:
    from tenantry.webhooks.delivery import Deliverer

CONSUMER = "webhooks"
WOKEN = "webhooks"  # session.info mark: deliveries were written or made due, wake the deliverer after commit
HANDED = "webhooks.handed"  # session.info: the jobs leased to this process, for its deliverer after commit


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


async def unscoped_fan_out(
    tx: AsyncSession, events: Sequence[OutboxEvent], *, deliverer: Deliverer | None = None
) -> None:
    """Outbox consumer: one pending delivery per (event, matching enabled endpoint of its organization),
    leased to ``deliverer`` while it has room. A batch spans organizations, so it reads and writes unscoped."""
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
    handed: list[Job] = []
    promised: dict[uuid.UUID, int] = {}
    for event in events:
        wanting = [e for e in by_org.get(event.org_id, ()) if _wants(e, event)] if event.org_id else []
        if not wanting:
            continue
        payload, org_id = body(event), event.org_id
        assert org_id is not None
        for endpoint in wanting:
            delivery_id = new_id()
            row: dict[str, Any] = {
                "id": delivery_id,
                "org_id": org_id,
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
            if deliverer is not None and promised.get(endpoint.id, 0) < deliverer.room(endpoint.id):
                promised[endpoint.id] = promised.get(endpoint.id, 0) + 1
                row.update(locked_by=deliverer.node_id, locked_until=now + deliverer.config.lease)
                claimed = Claimed(delivery_id, org_id, endpoint.id, event.event_id, payload.encode(), 0, False, now)
                handed.append((claimed, deliverer.targets.put(endpoint, now)))
            else:
                row.update(locked_by=None, locked_until=None)
            rows.append(row)
    if not rows:
        return
    inserted = await insert_new(tx, Delivery.__table__, rows, key="id")  # type: ignore[arg-type]
    tx.info[WOKEN] = True
    if handed:  # those a second fan-out of the same event did not make are someone else's
        tx.info.setdefault(HANDED, []).extend(job for job in handed if job[0].id in inserted)
