"""Writing events: always inside the caller's transaction, so a change and its event commit together."""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Table, insert

from tenantry.core.clock import utcnow
from tenantry.core.context import Actor
from tenantry.core.ids import new_id
from tenantry.db.statements import Lane, Statement
from tenantry.events.catalog import EVENT_TYPES
from tenantry.events.models import OutboxEvent

# The ``info`` key of a transaction that wrote events: the highest outbox id it wrote (see Dispatcher.wake).
NEWEST_EVENT = "newest_event"

_OUTBOX = cast(Table, OutboxEvent.__table__)
_COLUMNS = ("event_id", "type", "data", "org_id", "actor_type", "actor_id", "ip", "user_agent", "occurred_at")
# A hot statement (every sign-in writes one): its outbox id comes back with it, on either database.
_INSERT = Statement(insert(_OUTBOX).returning(_OUTBOX.c.id), _COLUMNS)


async def emit(
    session: Lane,
    type: str,
    *,
    data: dict[str, Any],
    actor: Actor | None = None,
    org_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Record that ``type`` happened; returns the event's id. Raises ``KeyError`` for a type missing
    from the catalog."""
    if type not in EVENT_TYPES:
        raise KeyError(f"unknown event type {type!r}")
    actor = actor or Actor.system()
    event_id = new_id()
    values = (event_id, type, data, org_id, actor.type, actor.id, actor.ip, actor.user_agent, utcnow())
    outbox_id = await _INSERT.scalar(session, *values)
    session.info["events"] = True
    if outbox_id is not None:
        session.info[NEWEST_EVENT] = max(session.info.get(NEWEST_EVENT, 0), outbox_id)
    return event_id
