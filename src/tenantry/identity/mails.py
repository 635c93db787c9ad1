"""The mails of the identity domain, in the reader's words. Each carries its token as ``token=…``."""

from __future__ import annotations

from datetime import timedelta

from tenantry.mail import Message


def _hours(ttl: timedelta) -> str:
    hours = round(ttl.total_seconds() / 3600)
    return "1 hour" if hours == 1 else f"{hours} hours"


def verification(*, to: str, name: str, token: str, base_url: str, ttl: timedelta) -> Message:
    link = f"{base_url}/verify-email?token={token}"
    text = (
        f"Hello {name},\n\n"
        "Please confirm that this is your email address by opening this link:\n\n"
        f"{link}\n\n"
        f"The link works once and for {_hours(ttl)}. If you did not sign up, ignore this mail.\n\n"
        f"token={token}\n"
    )
    return Message(to=to, subject="Confirm your email address", text=text)


def password_reset(*, to: str, name: str, token: str, base_url: str, ttl: timedelta) -> Message:
    link = f"{base_url}/reset-password?token={token}"
    text = (
        f"Hello {name},\n\n"
        "Someone asked to reset the password of your account. To choose a new one, open:\n\n"
        f"{link}\n\n"
        f"The link works once and for {_hours(ttl)}. If it was not you, ignore this mail: "
        "your password stays as it is.\n\n"
        f"token={token}\n"
    )
    return Message(to=to, subject="Reset your password", text=text)
