"""The audit log: every recorded change, fed from the outbox (one entry per event, idempotently)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.db import scope
from tenantry.db.upsert import insert_ignoring_conflicts
from tenantry.events.models import Event
from tenantry.tenancy.models import AuditEntry

CONSUMER = "audit"


def _target(event: Event) -> tuple[str | None, str | None]:
    """What an event is about: its ``target`` when it names one, else the object named by the first part
    of its type (``user.created`` -> user)."""
    named = event.data.get("target")
    if isinstance(named, dict) and "type" in named and "id" in named:
        return str(named["type"]), str(named["id"])
    kind = event.type.split(".", 1)[0]
    subject = event.data.get(kind)
    if isinstance(subject, dict) and "id" in subject:
        return kind, str(subject["id"])
    return kind, None


def _entry(event: Event) -> dict[str, Any]:
    target_type, target_id = _target(event)
    return {
        "id": event.event_id,
        "event_id": event.event_id,
        "org_id": event.org_id,
        "action": event.type,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "target_type": target_type,
        "target_id": target_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "data": event.data,
        "at": event.occurred_at,
    }


async def record(tx: AsyncSession, events: Sequence[Event]) -> None:
    """Outbox consumer: write one audit entry per event; an event seen twice is written once.
    A batch spans organizations, so it writes unscoped."""
    await scope.unscoped(tx)
    await insert_ignoring_conflicts(tx, AuditEntry.__table__, [_entry(e) for e in events])  # type: ignore[arg-type]
