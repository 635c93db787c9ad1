"""Fan-out: the outbox consumer that turns each organization event into one delivery per matching endpoint.

It runs in the dispatcher's transaction, the one that also moves the consumer's cursor: the
deliveries exist if and only if the cursor moved past their event, so none is lost and, since the
dispatcher hands events over at least once, a unique key makes a second fan-out of an event a no-op.
The body is fixed here, once, so every attempt of a delivery sends (and signs) the same bytes.

When this process delivers too, the deliveries it has room for are leased to it here, in the same
transaction, and handed to its deliverer after the commit (``HANDED``): the first attempt needs no
claim, which is most of a webhook's latency and of its database work. Those it has no room for are
written unleased, for any process to claim, and left with it as hints (``HINTED``) to lease by id.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
from sqlalchemy import Table, select

from tenantry.core.clock import utcnow
from tenantry.core.ids import new_id
from tenantry.db import scope
from tenantry.db.statements import Lane, Listing
from tenantry.db.upsert import bulk_insert_ignoring_conflicts
from tenantry.events.models import EventRow
from tenantry.webhooks.events import WEBHOOK_TEST
from tenantry.webhooks.models import ENDPOINT_ROW_COLUMNS, PENDING, Delivery, Endpoint, EndpointRow
from tenantry.webhooks.work import Claimed, Job, Target

if TYPE_CHECKING:
    from tenantry.webhooks.delivery import Deliverer

CONSUMER = "webhooks"
WOKEN = "webhooks"  # session.info mark: deliveries were written or made due, wake the deliverer after commit
HANDED = "webhooks.handed"  # session.info: the jobs leased to this process, for its deliverer after commit
HINTED = "webhooks.hinted"  # session.info: the jobs written unleased, for its deliverer to lease by id later
_TABLE = Delivery.__table__
_COLUMNS = (
    "id", "org_id", "endpoint_id", "event_id", "event_type", "payload", "status", "attempt_count",
    "is_one_shot", "next_attempt_at", "created_at", "locked_by", "locked_until",
)  # fmt: skip
# One row per delivery, hence a bulk write; a second fan-out of an event makes nothing (its unique key).
_INSERT = bulk_insert_ignoring_conflicts(_TABLE, _COLUMNS)  # type: ignore[arg-type]
_ENDPOINTS = cast(Table, Endpoint.__table__)
# Every batch's reads: the enabled endpoints of its organizations; which of the deliveries it wrote are there.
_ENABLED_ENDPOINTS = Listing(
    lambda orgs: select(*ENDPOINT_ROW_COLUMNS).where(_ENDPOINTS.c.org_id.in_(orgs), _ENDPOINTS.c.is_enabled.is_(True)),
    _ENDPOINTS.c.org_id.type,
    row=EndpointRow._make,
)
_EXISTING = Listing(lambda ids: select(_TABLE.c.id).where(_TABLE.c.id.in_(ids)), _TABLE.c.id.type)
_NOT_LEASED = (None, None)  # (locked_by, locked_until) of a delivery left for whoever claims it


def body(event: EventRow) -> str:
    """The request body of an event, as Standard Webhooks lays it out."""
    return orjson.dumps(
        {"type": event.type, "timestamp": event.occurred_at.isoformat(), "data": event.data}, default=str
    ).decode()


@dataclass
class _Route:
    """An endpoint during one batch: read once, and how many more this process takes for it."""

    endpoint: EndpointRow
    id: uuid.UUID
    room: int
    target: Target | None = None

    def __post_init__(self) -> None:
        self.name = str(self.id)  # as events name it


def _wants(route: _Route, event: EventRow) -> bool:
    endpoint = route.endpoint
    if event.occurred_at < endpoint.created_at:  # an endpoint hears what happens from its creation on
        return False
    if event.type == WEBHOOK_TEST:  # a test goes to the endpoint it names, and only there
        return route.name == event.data.get("endpoint_id")
    return endpoint.event_types is None or event.type in endpoint.event_types


@dataclass
class _Plan:
    """What one fan-out writes (``rows``, in ``_COLUMNS`` order) and what it leaves with this process's
    deliverer: leased to it (``handed``) while an endpoint has room, then unleased (``hinted``)."""

    deliverer: Deliverer | None
    now: datetime
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    handed: list[Job] = field(default_factory=list)
    hinted: list[Job] = field(default_factory=list)

    def __post_init__(self) -> None:
        deliverer = self.deliverer
        self.hint_room = deliverer.hint_room() if deliverer is not None else 0
        self.lease = (deliverer.node_id, self.now + deliverer.config.lease) if deliverer is not None else _NOT_LEASED
        self.lease_ends = time.monotonic() + deliverer.config.lease.total_seconds() if deliverer is not None else 0.0

    def add(self, route: _Route, event: EventRow, payload: str) -> None:
        deliverer, now, delivery_id = self.deliverer, self.now, new_id()
        held = deliverer is not None and route.room > 0
        row = (delivery_id, event.org_id, route.id, event.event_id, event.type, payload, PENDING, 0, False, now, now)
        self.rows.append((*row, *(self.lease if held else _NOT_LEASED)))
        if deliverer is None or not (held or len(self.hinted) < self.hint_room):
            return
        route.target = route.target or deliverer.targets.put(route.endpoint, now)
        if held:
            route.room -= 1
        # A hinted one has no lease yet: it is taken later, by id, if nobody else has taken it first.
        lease_ends = self.lease_ends if held else 0.0
        claimed = Claimed(
            delivery_id, route.endpoint.org_id, route.id, event.event_id, payload.encode(), 0, False, now, lease_ends
        )
        (self.handed if held else self.hinted).append((claimed, route.target))


async def unscoped_fan_out(tx: Lane, events: Sequence[EventRow], *, deliverer: Deliverer | None = None) -> None:
    """Outbox consumer: one pending delivery per (event, matching enabled endpoint of its organization),
    leased to ``deliverer`` while it has room. A batch spans organizations, so it reads and writes unscoped."""
    org_ids = {event.org_id for event in events if event.org_id is not None}
    if not org_ids:
        return
    await scope.unscoped(tx)
    routes: dict[uuid.UUID, list[_Route]] = {}
    for endpoint in await _ENABLED_ENDPOINTS.rows(tx, list(org_ids)):
        room = deliverer.room(endpoint.id) if deliverer is not None else 0
        routes.setdefault(endpoint.org_id, []).append(_Route(endpoint, endpoint.id, room))
    plan = _Plan(deliverer, utcnow())
    for event in events:
        wanting = [r for r in routes.get(event.org_id, ()) if _wants(r, event)] if event.org_id else []
        if wanting:
            payload = body(event)
            for route in wanting:
                plan.add(route, event, payload)
    if not plan.rows:
        return
    written = await _INSERT.run(tx, plan.rows)
    handed, hinted = plan.handed, plan.hinted
    if written != len(plan.rows) or len(handed) < len(plan.rows):  # some are for whoever claims them: wake the claimers
        tx.info[WOKEN] = True
    if (handed or hinted) and written != len(plan.rows):
        # Some were made already by an earlier fan-out of the same event (or the driver does not count):
        # those this one did not make are someone else's to send.
        ids = [job[0].id for job in (*handed, *hinted)]
        made = {row[0] for row in await _EXISTING.rows(tx, ids)}
        handed = [job for job in handed if job[0].id in made]
        hinted = [job for job in hinted if job[0].id in made]
    if handed:
        tx.info.setdefault(HANDED, []).extend(handed)
    if hinted:
        tx.info.setdefault(HINTED, []).extend(hinted)
