"""Writing events: always inside the caller's transaction, so a change and its event commit together."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.context import Actor
from tenantry.events.catalog import EVENT_TYPES
from tenantry.events.models import OutboxEvent


async def emit(
    session: AsyncSession,
    type: str,
    *,
    data: dict[str, Any],
    actor: Actor | None = None,
    org_id: uuid.UUID | None = None,
) -> OutboxEvent:
    """Record that ``type`` happened. Raises ``KeyError`` for a type missing from the catalog."""
    if type not in EVENT_TYPES:
        raise KeyError(f"unknown event type {type!r}")
    actor = actor or Actor.system()
    event = OutboxEvent(
        type=type,
        data=data,
        org_id=org_id,
        actor_type=actor.type,
        actor_id=actor.id,
        ip=actor.ip,
        user_agent=actor.user_agent,
    )
    session.add(event)
    session.info["events"] = True
    await session.flush()
    return event
