"""Response shapes of the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class AuditActor(BaseModel):
    type: str = Field(description='"user", "api_key" or "system".')
    id: str | None
    email: str | None = Field(default=None, description="A user's address (users only).")


class AuditTarget(BaseModel):
    type: str
    id: str | None


class AuditEntry(BaseModel):
    id: uuid.UUID
    action: str
    actor: AuditActor
    target: AuditTarget | None
    ip: str | None
    at: datetime


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None
