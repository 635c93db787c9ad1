"""What other domains may read about users: names and addresses, for lists such as an organization's
members. A small public module, so no other domain reads identity's tables."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select

from tenantry.db.engine import Writer
from tenantry.identity.models import User


@dataclass(frozen=True, slots=True)
class UserSummary:
    id: uuid.UUID
    email: str
    name: str
    email_verified: bool
    has_mfa: bool


async def find_users(tx: Writer, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, UserSummary]:
    """The users with these ids, in one query (missing ones are left out)."""
    if not ids:
        return {}
    query = select(User.id, User.email, User.name, User.email_verified_at, User.mfa_enabled_at).where(
        User.id.in_(list(ids))
    )
    rows = (await tx.execute(query)).all()
    return {
        r.id: UserSummary(r.id, r.email, r.name, r.email_verified_at is not None, r.mfa_enabled_at is not None)
        for r in rows
    }


async def find_user_by_email(tx: Writer, email: str) -> UserSummary | None:
    """The user with this address (case-insensitive), if any."""
    query = select(User.id, User.email, User.name, User.email_verified_at, User.mfa_enabled_at).where(
        User.email_normalized == email.strip().lower()
    )
    r = (await tx.execute(query)).first()
    if r is None:
        return None
    return UserSummary(r.id, r.email, r.name, r.email_verified_at is not None, r.mfa_enabled_at is not None)
