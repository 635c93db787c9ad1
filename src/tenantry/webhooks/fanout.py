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

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.ids import new_id
from tenantry.db import scope
from tenantry.db.upsert import bulk_insert_ignoring_conflicts
from tenantry.events.models import Event
from tenantry.webhooks.events import WEBHOOK_TEST
from tenantry.webhooks.models import PENDING, Delivery, Endpoint
from tenantry.webhooks.work import Claimed, Job, Target

if TYPE_CHECKING:
    from tenantry.webhooks.delivery import Deliverer

CONSUMER = "webhooks"
WOKEN = "webhooks"  # session.info mark: deliveries were written or made due, wake the deliverer after commit
HANDED = "webhooks.handed"  # session.info: the jobs leased to this process, for its deliverer after commit
_TABLE = Delivery.__table__
_COLUMNS = (
    "id", "org_id", "endpoint_id", "event_id", "event_type", "payload", "status", "attempt_count",
    "is_one_shot", "next_attempt_at", "created_at", "locked_by", "locked_until",
)  # fmt: skip
# One row per delivery, hence a bulk write; a second fan-out of an event makes nothing (its unique key).
_INSERT = bulk_insert_ignoring_conflicts(_TABLE, _COLUMNS)  # type: ignore[arg-type]
_NOT_LEASED = (None, None)  # (locked_by, locked_until) of a delivery left for whoever claims it


def body(event: Event) -> str:
    """The request body of an event, as Standard Webhooks lays it out."""
    return orjson.dumps(
        {"type": event.type, "timestamp": event.occurred_at.isoformat(), "data": event.data}, default=str
    ).decode()


def _wants(endpoint: Endpoint, event: Event) -> bool:
    if event.occurred_at < endpoint.created_at:  # an endpoint hears what happens from its creation on
        return False
    if event.type == WEBHOOK_TEST:  # a test goes to the endpoint it names, and only there
        return str(endpoint.id) == event.data.get("endpoint_id")
    return endpoint.event_types is None or event.type in endpoint.event_types


@dataclass
class _Route:
    """An endpoint during one batch: read once, and how many more this process takes for it."""

    endpoint: Endpoint
    id: uuid.UUID
    room: int
    target: Target | None = None


async def unscoped_fan_out(tx: AsyncSession, events: Sequence[Event], *, deliverer: Deliverer | None = None) -> None:
    """Outbox consumer: one pending delivery per (event, matching enabled endpoint of its organization),
    leased to ``deliverer`` while it has room. A batch spans organizations, so it reads and writes unscoped."""
    org_ids = {event.org_id for event in events if event.org_id is not None}
    if not org_ids:
        return
    await scope.unscoped(tx)
    query = select(Endpoint).where(Endpoint.org_id.in_(org_ids), Endpoint.is_enabled.is_(True))
    routes: dict[uuid.UUID, list[_Route]] = {}
    for endpoint in (await tx.scalars(query)).all():
        room = deliverer.room(endpoint.id) if deliverer is not None else 0
        routes.setdefault(endpoint.org_id, []).append(_Route(endpoint, endpoint.id, room))
    now = utcnow()
    lease_until = now + deliverer.config.lease if deliverer is not None else None
    lease_ends = time.monotonic() + deliverer.config.lease.total_seconds() if deliverer is not None else 0.0
    rows: list[tuple[Any, ...]] = []
    handed: list[Job] = []
    lease = (deliverer.node_id if deliverer is not None else None, lease_until)  # (locked_by, locked_until)
    for event in events:
        org_id = event.org_id
        wanting = [r for r in routes.get(org_id, ()) if _wants(r.endpoint, event)] if org_id else []
        if not wanting:
            continue
        assert org_id is not None
        payload, event_id, event_type = body(event), event.event_id, event.type
        for route in wanting:
            delivery_id = new_id()
            held = deliverer is not None and route.room > 0
            row = (delivery_id, org_id, route.id, event_id, event_type, payload, PENDING, 0, False, now, now)
            rows.append((*row, *(lease if held else _NOT_LEASED)))
            if held and deliverer is not None:
                route.room -= 1
                route.target = route.target or deliverer.targets.put(route.endpoint, now)
                claimed = Claimed(delivery_id, org_id, route.id, event_id, payload.encode(), 0, False, now, lease_ends)
                handed.append((claimed, route.target))
    if not rows:
        return
    written = await _INSERT.run(tx, rows)
    if written != len(rows) or len(handed) < len(rows):  # some are for whoever claims them: wake the claimers
        tx.info[WOKEN] = True
    if handed and written != len(rows):
        # Some were made already by an earlier fan-out of the same event (or the driver does not count):
        # those this one did not make are someone else's to send.
        ids = [job[0].id for job in handed]
        made = set((await tx.scalars(select(Delivery.id).where(Delivery.id.in_(ids)))).all())
        handed = [job for job in handed if job[0].id in made]
    if handed:
        tx.info.setdefault(HANDED, []).extend(handed)
