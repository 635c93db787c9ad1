"""Writing events: always inside the caller's transaction, so a change and its event commit together."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import CursorResult, insert

from tenantry.core.clock import utcnow
from tenantry.core.context import Actor
from tenantry.core.ids import new_id
from tenantry.db.engine import Writer
from tenantry.events.catalog import EVENT_TYPES
from tenantry.events.models import OutboxEvent

# The ``info`` key of a transaction that wrote events: the highest outbox id it wrote (see Dispatcher.wake).
NEWEST_EVENT = "newest_event"


async def emit(
    session: Writer,
    type: str,
    *,
    data: dict[str, Any],
    actor: Actor | None = None,
    org_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Record that ``type`` happened; returns the event's id. Raises ``KeyError`` for a type missing
    from the catalog.

    A plain INSERT rather than an ORM flush: events are written on hot paths (every sign-in).
    """
    if type not in EVENT_TYPES:
        raise KeyError(f"unknown event type {type!r}")
    actor = actor or Actor.system()
    event_id = new_id()
    result = await session.execute(
        insert(OutboxEvent.__table__),  # type: ignore[arg-type]
        {
            "event_id": event_id,
            "type": type,
            "data": data,
            "org_id": org_id,
            "actor_type": actor.type,
            "actor_id": actor.id,
            "ip": actor.ip,
            "user_agent": actor.user_agent,
            "occurred_at": utcnow(),
        },
    )
    session.info["events"] = True
    key = result.inserted_primary_key if isinstance(result, CursorResult) else None
    if key and key[0] is not None:  # the outbox id: SQLite's last row id, PostgreSQL's RETURNING
        session.info[NEWEST_EVENT] = max(session.info.get(NEWEST_EVENT, 0), key[0])
    return event_id
