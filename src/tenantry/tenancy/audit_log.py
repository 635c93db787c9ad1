"""Reading an organization's audit log (entries are written by the audit consumer in audit.py).

Entries come newest first by id: ids are the events' UUIDv7, which increase in the order a process
makes them (even within one millisecond), so the log follows the order of changes; events made by
different processes in the same millisecond keep no order among themselves. Entries appear once the
outbox consumer has run, a moment after the change commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, select

from tenantry.db.engine import Database
from tenantry.identity import directory
from tenantry.tenancy.models import AuditEntry
from tenantry.tenancy.policy import Caller, Policy
from tenantry.tenancy.views import Page, uuid_cursor


@dataclass(frozen=True, slots=True)
class AuditActor:
    type: str  # "user", "api_key", "system"
    id: str | None
    email: str | None = None  # users only


@dataclass(frozen=True, slots=True)
class AuditTarget:
    type: str
    id: str | None


@dataclass(frozen=True, slots=True)
class AuditEntryView:
    id: uuid.UUID
    action: str
    actor: AuditActor
    target: AuditTarget | None
    ip: str | None
    at: datetime


# The entry's ``data`` (a copy of the event) is left out: the log shows who did what to what.
_COLUMNS = (
    AuditEntry.id,
    AuditEntry.action,
    AuditEntry.actor_type,
    AuditEntry.actor_id,
    AuditEntry.target_type,
    AuditEntry.target_id,
    AuditEntry.ip,
    AuditEntry.at,
)
_Entry = Row[tuple[uuid.UUID, str, str | None, str | None, str | None, str | None, str | None, datetime]]


def _user_id(entry: _Entry) -> uuid.UUID | None:
    if entry.actor_type != "user" or not entry.actor_id:
        return None
    try:
        return uuid.UUID(entry.actor_id)
    except ValueError:
        return None


class AuditLogService:
    def __init__(self, *, db: Database, policy: Policy) -> None:
        self.db = db
        self.policy = policy

    async def list(
        self, *, caller: Caller, org_id: uuid.UUID, cursor: str | None, limit: int, action: str | None = None
    ) -> Page[AuditEntryView]:
        """A page of the organization's audit log, newest first, optionally of one ``action``; users'
        emails come from one more query for the whole page. Raises ``NotFound``, ``Forbidden``,
        ``InvalidInput`` (a cursor we did not give out)."""
        before = uuid_cursor(cursor)
        async with self.db.read() as tx:
            await self.policy.authorize(tx, caller, org_id, "audit.read")
            # Filtered by org_id although the transaction is scoped: on SQLite this filter is the only wall.
            query = select(*_COLUMNS).where(AuditEntry.org_id == org_id)
            if action is not None:
                query = query.where(AuditEntry.action == action)
            if before is not None:
                query = query.where(AuditEntry.id < before)
            rows = list((await tx.execute(query.order_by(AuditEntry.id.desc()).limit(limit + 1))).all())
            page = rows[:limit]
            users = await directory.find_users(tx, {u for r in page if (u := _user_id(r)) is not None})
        items = [_view(r, users) for r in page]
        return Page(items, str(page[-1].id) if len(rows) > limit else None)


def _view(entry: _Entry, users: dict[uuid.UUID, directory.UserSummary]) -> AuditEntryView:
    user_id = _user_id(entry)
    user = users.get(user_id) if user_id is not None else None
    email = user.email if user is not None else None
    actor = AuditActor(entry.actor_type or "system", entry.actor_id, email)
    target = AuditTarget(entry.target_type, entry.target_id) if entry.target_type else None
    return AuditEntryView(entry.id, entry.action, actor, target, entry.ip, entry.at)
