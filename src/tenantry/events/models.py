"""Tables of the event spine."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.clock import utcnow
from tenantry.core.ids import new_id
from tenantry.db.base import Base, UTCDateTime, Uuid

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class OutboxEvent(Base):
    """An event, written in the same transaction as the change it records."""

    __tablename__ = "events_outbox"
    __table_args__ = (Index("ix_events_outbox_org_id", "org_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=new_id)
    type: Mapped[str] = mapped_column(String(100))
    org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor_type: Mapped[str | None] = mapped_column(String(20))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EventRow(NamedTuple):
    """An outbox event as consumers are handed it: a plain tuple, read only. Not the ORM object (no identity
    map or change tracking), nor SQLAlchemy's ``Row``, whose attribute access is twenty times slower than a
    named tuple's, and consumers read several attributes of every event."""

    id: int
    event_id: uuid.UUID
    type: str
    org_id: uuid.UUID | None
    actor_type: str | None
    actor_id: str | None
    ip: str | None
    user_agent: str | None
    data: dict[str, Any]
    occurred_at: datetime


class ConsumerCursor(Base):
    """How far one consumer has read the outbox, and which process holds the right to read it."""

    __tablename__ = "events_consumer"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int] = mapped_column(BigId, default=0)
    owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """Durable background work (a mail to send, later a webhook attempt), claimed by any worker."""

    __tablename__ = "events_job"
    __table_args__ = (Index("ix_events_job_due", "done_at", "run_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=10)
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
