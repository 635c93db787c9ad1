"""Queueing a mail inside the caller's transaction: it is sent (and retried) by the job runner only
if the transaction commits, so no mail announces a change that was rolled back."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.events.jobs import enqueue
from tenantry.mail.mailer import Message

MAIL_JOB = "mail.send"


async def queue_mail(tx: AsyncSession, message: Message) -> None:
    """Send ``message`` once ``tx`` commits."""
    await enqueue(tx, MAIL_JOB, asdict(message), max_attempts=8)
