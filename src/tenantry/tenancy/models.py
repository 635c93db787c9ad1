"""Tables of the tenancy domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, ForeignKeyConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.clock import utcnow
from tenantry.core.ids import new_id
from tenantry.db.base import Base, UTCDateTime, Uuid

# Every table below with an ``org_id`` (and the organization table itself, by ``id``) is org-scoped:
# services reach it only through a transaction scoped to one organization, and on PostgreSQL a
# row-level-security policy refuses any row of another organization (see tenancy.scope).
ORG_SCOPED_TABLES = (
    "tenancy_organization",
    "tenancy_membership",
    "tenancy_role",
    "tenancy_team",
    "tenancy_team_member",
    "tenancy_invitation",
    "tenancy_api_key",
    "tenancy_audit_entry",
)


class Organization(Base):
    """A customer of our customer: the tenant. Everything org-scoped hangs off it."""

    __tablename__ = "tenancy_organization"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    require_mfa: Mapped[bool] = mapped_column(Boolean, default=False)
    # Lower-case domains whose verified users may join by themselves with the default role.
    allowed_email_domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Membership(Base):
    """A user's place in an organization, with one role (built-in or custom, by key)."""

    __tablename__ = "tenancy_membership"
    __table_args__ = (Index("ix_tenancy_membership_user_id", "user_id", "org_id"),)

    org_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenancy_organization.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("identity_user.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(64))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Role(Base):
    """A custom role of one organization: a named set of permissions, beside the built-in ones."""

    __tablename__ = "tenancy_role"

    org_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenancy_organization.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    permissions: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Team(Base):
    __tablename__ = "tenancy_team"
    __table_args__ = (Index("ix_tenancy_team_org_id", "org_id", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tenancy_organization.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TeamMember(Base):
    """A member of an organization in one of its teams. Leaving the organization leaves its teams."""

    __tablename__ = "tenancy_team_member"
    __table_args__ = (
        ForeignKeyConstraint(
            ["org_id", "user_id"], ["tenancy_membership.org_id", "tenancy_membership.user_id"], ondelete="CASCADE"
        ),
    )

    team_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenancy_team.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    role: Mapped[str] = mapped_column(String(16))  # "maintainer" | "member"
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Invitation(Base):
    """An emailed invitation to join an organization; only the token's SHA-256 is kept."""

    __tablename__ = "tenancy_invitation"
    __table_args__ = (Index("ix_tenancy_invitation_org_id", "org_id", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tenancy_organization.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    email_normalized: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(64))
    team_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """A machine credential of one organization; the key itself is shown once and kept as SHA-256."""

    __tablename__ = "tenancy_api_key"
    __table_args__ = (Index("ix_tenancy_api_key_org_id", "org_id", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tenancy_organization.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str | None] = mapped_column(String(64))
    permissions: Mapped[list[str] | None] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """One recorded change: who did what to what, from where. Fed by the outbox, one row per event."""

    __tablename__ = "tenancy_audit_entry"
    __table_args__ = (
        Index("ix_tenancy_audit_entry_org", "org_id", "id"),
        Index("ix_tenancy_audit_entry_actor", "actor_type", "actor_id", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    # The entry's id is its event's (the outbox's copy writes both): the primary key is what makes an event
    # handed over twice one entry. No index of its own: one more per event written would only repeat the key's.
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
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
