"""Read models of the tenancy domain: what the edges and other domains may hold on to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from tenantry.core.errors import InvalidInput
from tenantry.tenancy.models import Organization

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OrgView:
    id: uuid.UUID
    name: str
    slug: str
    require_mfa: bool
    allowed_email_domains: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, org: Organization) -> OrgView:
        return cls(
            org.id,
            org.name,
            org.slug,
            bool(org.require_mfa),
            list(org.allowed_email_domains or []),
            org.created_at,
            org.updated_at,
        )


@dataclass(frozen=True, slots=True)
class MemberView:
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    joined_at: datetime


# Identity semantics and a weak-reference slot: an edge may remember a page's encoding while the page
# lives (pages of members are kept in memory and served many times).
@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def uuid_cursor(cursor: str | None) -> uuid.UUID | None:
    """The position a page's ``next_cursor`` gave out (the last id seen). Raises ``InvalidInput``."""
    if not cursor:
        return None
    try:
        return uuid.UUID(cursor)
    except ValueError as exc:
        raise InvalidInput("This cursor is not one we gave out.", field="cursor") from exc
