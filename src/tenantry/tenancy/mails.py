"""The mails of the tenancy domain, in the reader's words. Each carries its token as ``token=…``."""

from __future__ import annotations

from datetime import timedelta

from tenantry.mail import Message


def _days(ttl: timedelta) -> str:
    days = round(ttl.total_seconds() / 86400)
    if days >= 1:
        return "1 day" if days == 1 else f"{days} days"
    hours = max(1, round(ttl.total_seconds() / 3600))
    return "1 hour" if hours == 1 else f"{hours} hours"


def invitation(*, to: str, org_name: str, role: str, token: str, base_url: str, ttl: timedelta) -> Message:
    link = f"{base_url}/invitations/accept?token={token}"
    text = (
        "Hello,\n\n"
        f"You are invited to join {org_name} on Tenantry, as {role}. To accept, sign in with this "
        "address and open:\n\n"
        f"{link}\n\n"
        f"The link works once and for {_days(ttl)}. If you did not expect it, ignore this mail.\n\n"
        f"token={token}\n"
    )
    return Message(to=to, subject=f"You are invited to join {org_name}", text=text)
