"""What the console tells a person: domain errors and finished actions, in plain words."""

from __future__ import annotations

import math

from tenantry.core.errors import DomainError, TooManyRequests

# Error code -> what the person reads. Codes not listed show the service's own ``detail``.
_ERRORS: dict[str, str] = {
    "invalid_credentials": "That email and password don't match an account. Check them and try again.",
    "email_taken": "An account with this email already exists. Sign in, or reset its password.",
    "invalid_token": "This link is invalid or has expired. Links work once, for a limited time.",
    "invalid_code": "That code is wrong or has expired. Check your authenticator app and try again.",
    "code_reused": "That code was already used. Wait for your app to show the next one.",
    "invalid_mfa_token": "Your sign-in attempt expired. Please sign in again.",
    "wrong_password": "Your current password is not right.",
    "invalid_credential": "The passkey could not be verified. Try again, or use your password.",
    "mfa_not_enabled": "Two-factor authentication is not turned on for this account.",
    "mfa_already_enabled": "Two-factor authentication is already on. Turn it off first to change apps.",
    "not_found": "That no longer exists. It may have been removed already.",
}

# ``?done=`` key -> the confirmation shown after a redirect. Only these keys are ever shown.
NOTICES: dict[str, str] = {
    "signed_out": "You are signed out.",
    "password_reset": "Your password was changed. Sign in with your new password.",
    "mfa_expired": "Your sign-in attempt expired. Please sign in again.",
    "profile_saved": "Your profile was saved.",
    "password_changed": "Your password was changed. Your other sessions were signed out.",
    "session_revoked": "That session was signed out.",
    "verification_sent": "We sent you a new confirmation link.",
    "totp_disabled": "Two-factor authentication is off.",
    "passkey_added": "Your passkey was added. You can now sign in with it.",
    "passkey_renamed": "Your passkey was renamed.",
    "passkey_removed": "Your passkey was removed.",
}


def explain(error: DomainError) -> str:
    """The sentence to show for ``error``."""
    if isinstance(error, TooManyRequests):
        return f"Too many attempts. Please wait {_duration(error.retry_after)} and try again."
    return _ERRORS.get(error.code, error.detail)


def notice(key: str | None) -> str | None:
    return NOTICES.get(key) if key else None


def _duration(seconds: float) -> str:
    if seconds < 60:
        whole = max(1, math.ceil(seconds))
        return "a second" if whole == 1 else f"{whole} seconds"
    minutes = math.ceil(seconds / 60)
    return "a minute" if minutes == 1 else f"{minutes} minutes"
