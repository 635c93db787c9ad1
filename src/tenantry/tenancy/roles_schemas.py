"""Request and response shapes of custom roles and the audit log (kept apart from schemas.py, which
other work edits at the same time)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

RoleName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
PermissionKey = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Permissions = Annotated[list[PermissionKey], Field(max_length=100)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RoleCreate(_In):
    key: str = Field(max_length=64, description="Lower-case letters, digits, '_' and '-', starting with a letter.")
    name: RoleName
    permissions: Permissions


class RoleUpdate(_In):
    name: RoleName | None = None
    permissions: Permissions | None = None


class Role(BaseModel):
    key: str
    name: str
    permissions: list[str]
    built_in: bool


class RoleList(BaseModel):
    items: list[Role]


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
