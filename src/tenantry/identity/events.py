"""Event types of the identity domain, and the shapes of their data.

Identity events belong to no organization: they are about a person, wherever they are a member.
The ``*Data`` models are the objects events carry; the ``*Event`` models the ``data`` of one or more
event types. The helpers below build what is emitted, and ``tests/events`` holds them to the models.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, with_config
from typing_extensions import TypedDict  # pydantic reads TypedDicts from typing_extensions only before 3.12

from tenantry.events.catalog import CLOSED, EventData, Id, Timestamp, register
from tenantry.identity.models import Session, User


class UserData(EventData):
    """A user account, as it stands once the change is made."""

    id: Id
    email: str = Field(description="The email address as the user wrote it (its domain normalised).")
    name: str
    email_verified: bool = Field(description="Whether the user proved they own the address (a mailed link).")
    mfa_enabled: bool = Field(
        description="Whether an authenticator app (TOTP) is on. Passkeys do not count: see `user.passkey_added`."
    )
    created_at: Timestamp = Field(description="When the user signed up.")


class UserRef(EventData):
    """The user a change belongs to, by id only."""

    id: Id


class NameChange(EventData):
    """A value before and after a change."""

    from_: str = Field(alias="from", description="Before the change.")
    to: str = Field(description="After the change.")


@with_config(CLOSED)
class UserChanges(TypedDict, total=False):
    """What changed, field by field; a field that did not change is absent."""

    name: NameChange


class UserEvent(EventData):
    """The user concerned (`user.created`, `user.email_verified`)."""

    user: UserData


class UserUpdatedEvent(EventData):
    """A user's profile changed (`user.updated`)."""

    user: UserData
    changes: UserChanges


class PasswordChangedEvent(EventData):
    """A user's password changed (`user.password_changed`)."""

    user: UserData
    reason: Literal["password_changed", "password_reset"] = Field(
        description="`password_changed`: changed by the signed-in user, who gave the old one (their other sessions "
        "end); `password_reset`: set with a mailed reset link (every session ends)."
    )


class MfaEnabledEvent(EventData):
    """A user turned a second factor on (`user.mfa_enabled`)."""

    user: UserData
    method: Literal["totp"] = Field(description="The second factor: `totp`, an authenticator app.")


class MfaDisabledEvent(EventData):
    """A user's second factor was turned off (`user.mfa_disabled`)."""

    user: UserData
    method: Literal["totp"] = Field(description="The second factor: `totp`, an authenticator app.")
    reason: Literal["disabled_by_user", "reset_by_operator"] = Field(
        description="`disabled_by_user`: the user turned it off, proving it with a code; `reset_by_operator`: an "
        "operator turned it off for someone who had lost both their app and their recovery codes."
    )


class PasskeyData(EventData):
    """A passkey (a WebAuthn credential) of a user."""

    id: Id
    name: str = Field(description="The label the user gave it, to tell their passkeys apart.")
    created_at: Timestamp = Field(description="When it was registered.")


class PasskeyEvent(EventData):
    """A passkey and its user (`user.passkey_added`, `user.passkey_removed`)."""

    user: UserRef
    passkey: PasskeyData


class SessionData(EventData):
    """A signed-in device: a session of the API (tokens) or of the console (a cookie)."""

    id: Id
    user_id: Id
    ip: str | None = Field(
        description="The client's IP address: at sign-in for `session.created`, the last one seen for "
        "`session.revoked`; null when unknown."
    )
    user_agent: str | None = Field(
        description="The client's User-Agent header at sign-in (at most 512 characters); null when it sent none."
    )
    created_at: Timestamp = Field(description="When the user signed in.")


class SessionCreatedEvent(EventData):
    """A user signed in (`session.created`)."""

    session: SessionData


class SessionRevokedEvent(EventData):
    """A session ended before it expired (`session.revoked`)."""

    session: SessionData
    reason: Literal["logout", "revoked", "password_changed", "password_reset", "refresh_token_reused"] = Field(
        description="`logout`: the session signed itself out; `revoked`: the user ended it from their list of "
        "sessions; `password_changed`, `password_reset`: every other session (every session, for a reset) ends with "
        "a new password; `refresh_token_reused`: a spent refresh token came back, so the token chain may be stolen."
    )


USER_CREATED = register("user.created", "A person signed up.", UserEvent, scope="user")
USER_UPDATED = register("user.updated", "A user's profile changed.", UserUpdatedEvent, scope="user")
USER_EMAIL_VERIFIED = register(
    "user.email_verified", "A user proved they own their email address.", UserEvent, scope="user"
)
USER_PASSWORD_CHANGED = register(
    "user.password_changed", "A user's password was changed or reset.", PasswordChangedEvent, scope="user"
)
SESSION_CREATED = register("session.created", "A user signed in on a device.", SessionCreatedEvent, scope="user")
USER_MFA_ENABLED = register(
    "user.mfa_enabled",
    "A user turned on two-factor authentication (an authenticator app).",
    MfaEnabledEvent,
    scope="user",
)
USER_MFA_DISABLED = register(
    "user.mfa_disabled", "A user turned off two-factor authentication.", MfaDisabledEvent, scope="user"
)
USER_PASSKEY_ADDED = register("user.passkey_added", "A user registered a passkey.", PasskeyEvent, scope="user")
USER_PASSKEY_REMOVED = register("user.passkey_removed", "A user removed a passkey.", PasskeyEvent, scope="user")
SESSION_REVOKED = register(
    "session.revoked",
    "A session ended: sign-out, revocation, password change or token reuse.",
    SessionRevokedEvent,
    scope="user",
)


def user_data(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "email_verified": user.is_email_verified,
        "mfa_enabled": user.has_mfa,
        "created_at": user.created_at.isoformat(),
    }


def session_data(
    *, id: uuid.UUID, user_id: uuid.UUID, ip: str | None, user_agent: str | None, created_at: datetime
) -> dict[str, Any]:
    return {
        "id": str(id),
        "user_id": str(user_id),
        "ip": ip,
        "user_agent": user_agent,
        "created_at": created_at.isoformat(),
    }


def session_row_data(session: Session) -> dict[str, Any]:
    return session_data(
        id=session.id,
        user_id=session.user_id,
        ip=session.ip,
        user_agent=session.user_agent,
        created_at=session.created_at,
    )
