"""Read models of the identity domain: what other domains and the edges may hold on to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from tenantry.identity.models import User


@dataclass(frozen=True, slots=True)
class UserView:
    id: uuid.UUID
    email: str
    name: str
    email_verified: bool
    created_at: datetime
    updated_at: datetime
    mfa_enabled: bool = False

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            email_verified=user.is_email_verified,
            mfa_enabled=user.has_mfa,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


# Where a session is carried: bearer tokens for the API, an HttpOnly cookie for the console.
Channel = Literal["api", "console"]


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A console sign-in: the cookie value (shown once, stored hashed) and when it stops working."""

    session_id: uuid.UUID
    cookie: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class MfaRequired:
    """The first factor was right; ``mfa_token`` and a second factor complete the sign-in."""

    mfa_token: str
    methods: tuple[str, ...]
    expires_in: int


# What a sign-in step yields: an open session on the asked channel, or the need for a second factor.
SignIn = TokenPair | ConsoleSession | MfaRequired


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


@dataclass(frozen=True, slots=True)
class PasskeyView:
    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None
    is_backed_up: bool


@dataclass(frozen=True, slots=True)
class TotpSetup:
    """A new authenticator-app secret, shown once; inactive until a code from it is confirmed."""

    secret: str
    otpauth_uri: str


@dataclass(frozen=True, slots=True)
class MfaStatus:
    totp_enabled: bool
    recovery_codes_left: int
    passkeys: int
