"""Event types of the identity domain, and the shapes of their data."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from tenantry.events.catalog import register
from tenantry.identity.models import Session, User

USER_CREATED = register("user.created", "A person signed up.")
USER_UPDATED = register("user.updated", "A user's profile changed.")
USER_EMAIL_VERIFIED = register("user.email_verified", "A user proved they own their email address.")
USER_PASSWORD_CHANGED = register("user.password_changed", "A user's password was changed or reset.")
SESSION_CREATED = register("session.created", "A user signed in on a device.")
USER_MFA_ENABLED = register("user.mfa_enabled", "A user turned on two-factor authentication (an authenticator app).")
USER_MFA_DISABLED = register("user.mfa_disabled", "A user turned off two-factor authentication.")
USER_PASSKEY_ADDED = register("user.passkey_added", "A user registered a passkey.")
USER_PASSKEY_REMOVED = register("user.passkey_removed", "A user removed a passkey.")
SESSION_REVOKED = register("session.revoked", "A session ended: sign-out, revocation, password change or token reuse.")


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
