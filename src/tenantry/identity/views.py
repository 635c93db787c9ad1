"""Read models of the identity domain: what other domains and the edges may hold on to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from tenantry.identity.models import User


@dataclass(frozen=True, slots=True)
class UserView:
    id: uuid.UUID
    email: str
    name: str
    email_verified: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            email_verified=user.is_email_verified,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class SessionView:
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a signed-in user in one of their sessions."""

    user: UserView
    session_id: uuid.UUID
