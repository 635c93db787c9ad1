"""The audit log: every recorded change, fed from the outbox (one entry per event, idempotently)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tenantry.db import scope
from tenantry.db.statements import Lane
from tenantry.db.upsert import bulk_insert_ignoring_conflicts
from tenantry.events.models import EventRow
from tenantry.tenancy.models import AuditEntry

CONSUMER = "audit"
_TABLE = AuditEntry.__table__
_COLUMNS = (
    "id", "event_id", "org_id", "action", "actor_type", "actor_id",
    "target_type", "target_id", "ip", "user_agent", "data", "at",
)  # fmt: skip
# One row per event, hence a bulk write: an event handed over twice is written once (its unique event_id).
_INSERT = bulk_insert_ignoring_conflicts(_TABLE, _COLUMNS)  # type: ignore[arg-type]


def _target(event: EventRow) -> tuple[str | None, str | None]:
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


def _entry(event: EventRow) -> tuple[Any, ...]:
    """An audit row, its values in ``_COLUMNS`` order (the entry takes its event's id)."""
    target_type, target_id = _target(event)
    return (
        event.event_id, event.event_id, event.org_id, event.type, event.actor_type, event.actor_id,
        target_type, target_id, event.ip, event.user_agent, event.data, event.occurred_at,
    )  # fmt: skip


async def record(tx: Lane, events: Sequence[EventRow]) -> None:
    """Outbox consumer: write one audit entry per event; an event seen twice is written once.
    A batch spans organizations, so it writes unscoped."""
    await scope.unscoped(tx)
    await _INSERT.run(tx, [_entry(e) for e in events])
