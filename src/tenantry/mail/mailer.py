"""Sending mail: the port and its two adapters."""

from __future__ import annotations

import asyncio
import mailbox
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    text: str


class Mailer(Protocol):
    async def send(self, message: Message) -> None: ...


def _compose(message: Message, sender: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.to
    email["Subject"] = message.subject
    email["Date"] = formatdate(localtime=False)
    email["Message-ID"] = make_msgid(domain="tenantry.localhost")
    email.set_content(message.text)
    return email


class SmtpMailer:
    """Delivers through an SMTP server: ``smtp://[user:pass@]host:port``, ``smtps://`` for implicit TLS,
    ``?starttls=true`` to upgrade a plain connection."""

    def __init__(self, url: str, *, sender: str, timeout: float = 15.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.use_tls = parts.scheme == "smtps"
        self.start_tls = "starttls=true" in parts.query
        self.sender = sender
        self.timeout = timeout

    async def send(self, message: Message) -> None:
        await aiosmtplib.send(
            _compose(message, self.sender),
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls or None,
            timeout=self.timeout,
        )


class MailboxMailer:
    """Keeps mail in a Maildir under the data dir, for development: ``tenantry mail list`` shows it."""

    def __init__(self, path: Path, *, sender: str) -> None:
        self.path = path
        self.sender = sender

    async def send(self, message: Message) -> None:
        email = _compose(message, self.sender)
        await asyncio.to_thread(self._store, email)

    def _store(self, email: EmailMessage) -> None:
        box = mailbox.Maildir(self.path, create=True)
        try:
            box.add(email)
        finally:
            box.close()

    def messages(self) -> list[EmailMessage]:
        """Every stored mail, oldest first."""
        if not self.path.exists():
            return []
        box = mailbox.Maildir(self.path, create=False)
        try:
            stored = sorted(
                ((box.get_message(key).get_date(), key) for key in box.iterkeys()), key=lambda pair: pair[0]
            )
            found = [message_from_bytes(box.get_bytes(key), policy=policy.default) for _, key in stored]
        finally:
            box.close()
        return [m for m in found if isinstance(m, EmailMessage)]


def build_mailer(*, smtp_url: str | None, data_dir: Path, sender: str) -> Mailer:
    """The adapter the settings ask for."""
    if smtp_url:
        return SmtpMailer(smtp_url, sender=sender)
    return MailboxMailer(data_dir / "mailbox", sender=sender)
