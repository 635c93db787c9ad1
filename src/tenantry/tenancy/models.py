"""Tables of the tenancy domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.ids import new_id
from tenantry.db.base import Base, UTCDateTime


class AuditEntry(Base):
    """One recorded change: who did what to what, from where. Fed by the outbox, one row per event."""

    __tablename__ = "tenancy_audit_entry"
    __table_args__ = (
        Index("ix_tenancy_audit_entry_org", "org_id", "id"),
        Index("ix_tenancy_audit_entry_actor", "actor_type", "actor_id", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    action: Mapped[str] = mapped_column(String(100))
    actor_type: Mapped[str | None] = mapped_column(String(20))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(40))
    target_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
