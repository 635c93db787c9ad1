"""The audit log: every recorded change, fed from the outbox (one entry per event, idempotently)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BigInteger, String, bindparam, select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import ClauseElement

from tenantry.db import scope
from tenantry.db.statements import Lane, Statement
from tenantry.db.upsert import dialect_insert
from tenantry.events.models import EventRow, OutboxEvent
from tenantry.tenancy.models import AuditEntry

CONSUMER = "audit"
_AUDIT = AuditEntry.__table__
_OUTBOX = OutboxEvent.__table__


def _copy(dialect: Dialect) -> ClauseElement:
    """An audit entry copied from its outbox row by the database (only what it is about comes from Python): the
    event's data, times and ids are not read back, converted and written again. An event handed over twice is
    written once: the entry's id is the event's."""
    copied = select(
        _OUTBOX.c.event_id, _OUTBOX.c.event_id, _OUTBOX.c.org_id, _OUTBOX.c.type, _OUTBOX.c.actor_type,
        _OUTBOX.c.actor_id, bindparam("target_type", type_=String), bindparam("target_id", type_=String),
        _OUTBOX.c.ip, _OUTBOX.c.user_agent, _OUTBOX.c.data, _OUTBOX.c.occurred_at,
    ).where(_OUTBOX.c.id == bindparam("outbox_id", type_=BigInteger))  # fmt: skip
    columns = (
        "id", "event_id", "org_id", "action", "actor_type", "actor_id",
        "target_type", "target_id", "ip", "user_agent", "data", "at",
    )  # fmt: skip
    return dialect_insert(dialect, _AUDIT).from_select(columns, copied).on_conflict_do_nothing()  # type: ignore[arg-type]


_COPY = Statement(_copy, ("outbox_id", "target_type", "target_id"))


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


async def record(tx: Lane, events: Sequence[EventRow]) -> None:
    """Outbox consumer: write one audit entry per event; an event seen twice is written once.
    A batch spans organizations, so it writes unscoped."""
    await scope.unscoped(tx)
    await _COPY.many(tx, [(event.id, *_target(event)) for event in events])
