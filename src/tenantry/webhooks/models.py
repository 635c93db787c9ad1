"""Tables of webhooks: endpoints, the deliveries owed to them, and the log of every attempt.

All three are org-scoped (row-level security on PostgreSQL). A delivery is the unit of durable work:
claimed with a lease by whichever process delivers, so a killed process loses nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.clock import utcnow
from tenantry.core.ids import new_id
from tenantry.db.base import Base, UTCDateTime, Uuid

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
PENDING_ONLY = text(f"status = '{PENDING}'")  # the due index's condition
# Scoped like tenancy's (row-level security on PostgreSQL, migration 0004).
ORG_SCOPED_TABLES = ("webhooks_endpoint", "webhooks_delivery", "webhooks_attempt")


class Endpoint(Base):
    """Where an organization wants its events sent, and how."""

    __tablename__ = "webhooks_endpoint"
    __table_args__ = (Index("ix_webhooks_endpoint_org_id", "org_id", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tenancy_organization.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str] | None] = mapped_column(JSON)  # None: every event
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    rate_limit: Mapped[int | None] = mapped_column(Integer)  # requests per second; None: no limit
    is_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    # Sealed (AES-GCM, bound to the endpoint's id): a database dump alone cannot forge signatures.
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # first failure since the last success
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Delivery(Base):
    """One event owed to one endpoint: pending until an attempt succeeds or the retries run out."""

    __tablename__ = "webhooks_delivery"
    __table_args__ = (
        # The dispatcher hands events over at least once: a second fan-out of an event is a no-op.
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhooks_delivery_endpoint_event"),
        # What is due, in the order it fell due: pending deliveries only (finished ones, most rows of a long-lived
        # log, are not in it, and settling one takes its entry out rather than moving it). A query uses it only if
        # it says status = 'pending' literally (a bound parameter does not match the condition): see the claims'.
        Index("ix_webhooks_delivery_due", "next_attempt_at", sqlite_where=PENDING_ONLY, postgresql_where=PENDING_ONLY),
        Index("ix_webhooks_delivery_endpoint", "endpoint_id", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tenancy_organization.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("webhooks_endpoint.id", ondelete="CASCADE"))
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)  # sent as webhook-id, the same on every attempt
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[str] = mapped_column(Text)  # the exact body, fixed once so every attempt signs the same bytes
    status: Mapped[str] = mapped_column(String(10), default=PENDING)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    # A retry asked for by hand (or a recovery) is one more attempt, not a new run of the schedule.
    is_one_shot: Mapped[bool] = mapped_column(Boolean, default=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Attempt(Base):
    """One request made for a delivery, as the receiver answered it (or why it could not)."""

    __tablename__ = "webhooks_attempt"
    __table_args__ = (Index("ix_webhooks_attempt_delivery", "delivery_id", "at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tenancy_organization.id", ondelete="CASCADE"))
    delivery_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("webhooks_delivery.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    response_status: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    response_body: Mapped[str | None] = mapped_column(Text)  # what was read of it, at most the read limit


class EndpointRow(NamedTuple):
    """What the fan-out and the sending read of an endpoint, as plain columns (a read of every event batch)."""

    id: uuid.UUID
    org_id: uuid.UUID
    url: str
    event_types: list[str] | None
    headers: dict[str, str]
    rate_limit: int | None
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


# The columns of an ``EndpointRow``, in its order.
ENDPOINT_ROW_COLUMNS = tuple(Endpoint.__table__.c[name] for name in EndpointRow._fields)
