"""The development mailbox: with no SMTP server configured, mail is kept under the data dir, and this
page shows it, so that signing up and resetting a password work end to end after ``make run``.

Shown only in the ``dev`` environment, only when mail is kept locally, and only to a browser on this
machine (the mails carry sign-in links): anywhere else the page does not exist.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from fastapi import APIRouter, Request
from starlette.responses import Response

from tenantry.console import pages
from tenantry.console.routing import ConsoleRoute, platform
from tenantry.core.errors import NotFound
from tenantry.mail.mailer import MailboxMailer

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
SHOWN = 20
_LINK = re.compile(r"https?://\S+")


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    sent_at: datetime | None
    text: str
    links: list[str]


def local_mailbox(request: Request) -> MailboxMailer | None:
    """The local mailbox, if this request may see it."""
    found = platform(request)
    peer = request.client.host if request.client else ""
    try:
        is_local = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        is_local = False
    if found.settings.env != "dev" or not is_local or not isinstance(found.mailer, MailboxMailer):
        return None
    return found.mailer


def _mail(message: EmailMessage) -> Mail:
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if isinstance(body, EmailMessage) else ""
    date = message.get("Date")
    return Mail(
        to=str(message.get("To", "")),
        subject=str(message.get("Subject", "")),
        sent_at=date.datetime if date is not None else None,
        text=text,
        links=_LINK.findall(text),
    )


@router.get("/mailbox")
async def mailbox(request: Request) -> Response:
    box = local_mailbox(request)
    if box is None:
        raise NotFound("There is no development mailbox here.")
    messages = await asyncio.to_thread(box.messages)
    mails = [_mail(m) for m in reversed(messages[-SHOWN:])]
    return pages.render(request, "mailbox.html", mails=mails)
