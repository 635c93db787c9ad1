"""Request and response shapes of teams and invitations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tenantry.tenancy.schemas import Key, Name

TeamRole = Literal["maintainer", "member"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeamCreate(_In):
    name: Name


class TeamUpdate(_In):
    name: Name


class Team(BaseModel):
    id: uuid.UUID
    name: str
    member_count: int
    created_at: datetime
    updated_at: datetime


class TeamPage(BaseModel):
    items: list[Team]
    next_cursor: str | None


class TeamMemberAdd(_In):
    user_id: uuid.UUID
    role: TeamRole = "member"


class TeamMember(BaseModel):
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    added_at: datetime


class TeamMemberPage(BaseModel):
    items: list[TeamMember]
    next_cursor: str | None


class InvitationCreate(_In):
    email: str = Field(max_length=320)
    role: Key
    team_ids: list[uuid.UUID] = Field(default_factory=list, max_length=100)


class Invitation(BaseModel):
    id: uuid.UUID
    email: str
    role: str
    status: Literal["pending", "accepted", "revoked", "expired"]
    team_ids: list[uuid.UUID]
    created_at: datetime
    expires_at: datetime


class InvitationPage(BaseModel):
    items: list[Invitation]
    next_cursor: str | None


class Membership(BaseModel):
    org_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    joined_at: datetime


class InvitationAccept(_In):
    token: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
