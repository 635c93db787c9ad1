"""Invitations: mailed, single-use tokens that make someone a member.

The token (256 random bits) is mailed once and kept as its SHA-256. An invitation is open until it
is accepted, revoked or expires; every change of an open invitation is a conditional UPDATE
(``accepted_at IS NULL AND revoked_at IS NULL``), so of a revoke, a resend and two accepts racing for
one invitation, the first wins and the others see it gone. Inviting obeys the rule of the policy:
nobody invites with a role carrying permissions they do not hold.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.errors import Forbidden, NotFound
from tenantry.core.ids import digest, new_id, new_secret
from tenantry.db import scope
from tenantry.db.engine import Database
from tenantry.events.outbox import emit
from tenantry.identity import directory
from tenantry.identity.directory import UserSummary
from tenantry.identity.service import normalize_email
from tenantry.mail.outbox import queue_mail
from tenantry.tenancy import mails, policy
from tenantry.tenancy.errors import (
    AlreadyMember,
    EmailNotVerified,
    InvitationEmailMismatch,
    InvitationExpired,
    InvitationInvalid,
    UnknownRole,
)
from tenantry.tenancy.events import INVITATION_ACCEPTED, INVITATION_CREATED, INVITATION_REVOKED, target
from tenantry.tenancy.models import Invitation, Membership, Organization
from tenantry.tenancy.orgs import add_member
from tenantry.tenancy.policy import Access, Caller, Policy
from tenantry.tenancy.teams import add_to_teams, find_teams
from tenantry.tenancy.views import Page, uuid_cursor

PENDING, ACCEPTED, REVOKED, EXPIRED = "pending", "accepted", "revoked", "expired"


@dataclass(frozen=True, slots=True)
class InvitationView:
    id: uuid.UUID
    email: str
    role: str
    status: str
    team_ids: list[uuid.UUID]
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class MembershipView:
    org_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    joined_at: datetime


def status_of(row: Invitation, now: datetime) -> str:
    if row.accepted_at is not None:
        return ACCEPTED
    if row.revoked_at is not None:
        return REVOKED
    return EXPIRED if row.expires_at <= now else PENDING


def _view(row: Invitation, now: datetime) -> InvitationView:
    team_ids = [uuid.UUID(t) for t in row.team_ids or []]
    return InvitationView(row.id, row.email, row.role, status_of(row, now), team_ids, row.created_at, row.expires_at)


def _data(row: Invitation) -> dict[str, Any]:
    return {
        "invitation": {"id": str(row.id), "email": row.email, "role": row.role, "team_ids": list(row.team_ids or [])},
        "target": target("invitation", row.id),
    }


class InvitationService:
    def __init__(
        self, *, db: Database, policy: Policy, ttl_seconds: int = 7 * 24 * 3600, base_url: str = "http://localhost:8000"
    ) -> None:
        self.db = db
        self.policy = policy
        self.ttl = timedelta(seconds=ttl_seconds)
        self.base_url = base_url.rstrip("/")

    async def invite(
        self, *, caller: Caller, org_id: uuid.UUID, email: str, role: str, team_ids: list[uuid.UUID]
    ) -> InvitationView:
        """Invite ``email`` with ``role`` (and into ``team_ids`` on acceptance), mailing a token; an open
        invitation to the same address is revoked (its token dies). Raises ``NotFound`` (also for a team
        not of this organization), ``Forbidden`` (a role stronger than the caller's), ``UnknownRole``,
        ``InvalidInput`` (not an email address), ``AlreadyMember``."""
        shown, key = normalize_email(email)
        token, now = new_secret(), utcnow()
        async with self.db.transaction() as tx:
            access = await self.policy.authorize(tx, caller, org_id, "invitations.manage")
            await _check_role(tx, access, role)
            wanted = sorted(set(team_ids))
            if len(await find_teams(tx, org_id=org_id, team_ids=wanted)) != len(wanted):
                raise NotFound("No such team.", field="team_ids")
            await _refuse_member(tx, org_id, key)
            await _revoke_open(tx, org_id=org_id, key=key, caller=caller, now=now)
            row = Invitation(
                id=new_id(),
                org_id=org_id,
                email=shown,
                email_normalized=key,
                role=role,
                team_ids=[str(t) for t in wanted],
                token_hash=digest(token),
                invited_by=caller.actor.id,
                created_at=now,
                expires_at=now + self.ttl,
            )
            tx.add(row)
            await tx.flush()
            await emit(tx, INVITATION_CREATED, data=_data(row), actor=caller.actor, org_id=org_id)
            await self._mail(tx, row, token)
        return _view(row, now)

    async def list(self, *, caller: Caller, org_id: uuid.UUID, cursor: str | None, limit: int) -> Page[InvitationView]:
        """A page of the organization's invitations of every status, oldest first."""
        after = uuid_cursor(cursor)
        async with self.db.read() as tx:
            await self.policy.authorize(tx, caller, org_id, "invitations.read")
            query = select(Invitation).where(Invitation.org_id == org_id)
            if after is not None:
                query = query.where(Invitation.id > after)
            rows = list((await tx.scalars(query.order_by(Invitation.id).limit(limit + 1))).all())
        now = utcnow()
        return Page([_view(r, now) for r in rows[:limit]], str(rows[limit - 1].id) if len(rows) > limit else None)

    async def revoke(self, *, caller: Caller, org_id: uuid.UUID, invitation_id: uuid.UUID) -> None:
        """Revoke an open invitation; its token stops working. Raises ``NotFound`` (also once accepted or
        revoked), ``Forbidden`` (an invitation with a role stronger than the caller's)."""
        async with self.db.transaction() as tx:
            access = await self.policy.authorize(tx, caller, org_id, "invitations.manage")
            row = await _open(tx, org_id, invitation_id)
            policy.ensure_within(access, await policy.role_permissions(tx, org_id, row.role) or frozenset())
            await _change_open(tx, row, revoked_at=utcnow())
            data = {**_data(row), "reason": "revoked"}
            await emit(tx, INVITATION_REVOKED, data=data, actor=caller.actor, org_id=org_id)

    async def resend(self, *, caller: Caller, org_id: uuid.UUID, invitation_id: uuid.UUID) -> InvitationView:
        """Mail a new token with a new expiry (the old token dies); works on an expired invitation too.
        Raises ``NotFound`` (also once accepted or revoked), ``Forbidden``, ``UnknownRole`` (its role was
        deleted since)."""
        token, now = new_secret(), utcnow()
        async with self.db.transaction() as tx:
            access = await self.policy.authorize(tx, caller, org_id, "invitations.manage")
            row = await _open(tx, org_id, invitation_id)
            await _check_role(tx, access, row.role)
            await _change_open(tx, row, token_hash=digest(token), expires_at=now + self.ttl)
            await self._mail(tx, row, token)
        return _view(row, now)

    async def unscoped_accept(self, *, caller: Caller, token: str) -> MembershipView:
        """Become a member with the invitation's role, and join its teams that still exist. The token
        names the organization, so finding it must cross organizations. Raises ``Forbidden`` (an API
        key), ``InvitationInvalid`` (unknown, revoked or used), ``InvitationExpired``,
        ``InvitationEmailMismatch``, ``EmailNotVerified``, ``AlreadyMember`` (also ``InvitationInvalid`` when
        the custom role it offered was deleted since)."""
        if caller.user_id is None:
            raise Forbidden("Only a signed-in user can accept an invitation.")
        found = await self._unscoped_find(token)
        try:
            async with self.db.transaction() as tx:
                await scope.to_org(tx, found.org_id)
                user = await _invitee(tx, caller.user_id, found)
                if await tx.get(Membership, (found.org_id, user.id)) is not None:
                    raise AlreadyMember()
                await _spend(tx, found)
                if await policy.role_permissions(tx, found.org_id, found.role) is None:
                    raise InvitationInvalid("The role this invitation offered no longer exists; ask for a new one.")
                member = await add_member(tx, org_id=found.org_id, user_id=user.id, role=found.role, caller=caller)
                team_ids = [uuid.UUID(t) for t in found.team_ids or []]
                await add_to_teams(tx, org_id=found.org_id, user_id=user.id, team_ids=team_ids, caller=caller)
                await emit(tx, INVITATION_ACCEPTED, data=_data(found), actor=caller.actor, org_id=found.org_id)
        except IntegrityError as exc:  # joined at the same moment by another way (PostgreSQL)
            raise AlreadyMember() from exc
        await self.policy.forget(found.org_id)
        return MembershipView(found.org_id, user.id, user.email, user.name, member.role, member.joined_at)

    async def _unscoped_find(self, token: str) -> Invitation:
        """The open invitation behind ``token``, in a read transaction of its own: the wall is lifted
        for this one lookup by secret, never for the writes that follow."""
        async with self.db.read() as tx:
            await scope.unscoped(tx)
            row = await tx.scalar(select(Invitation).where(Invitation.token_hash == digest(token)))
        if row is None or row.accepted_at is not None or row.revoked_at is not None:
            raise InvitationInvalid()
        if row.expires_at <= utcnow():
            raise InvitationExpired()
        return row

    async def _mail(self, tx: AsyncSession, row: Invitation, token: str) -> None:
        org = await tx.get(Organization, row.org_id)
        assert org is not None  # authorized just now, in this transaction
        message = mails.invitation(
            to=row.email, org_name=org.name, role=row.role, token=token, base_url=self.base_url, ttl=self.ttl
        )
        await queue_mail(tx, message)


async def _check_role(tx: AsyncSession, access: Access, role: str) -> None:
    """Raises ``UnknownRole``, or ``Forbidden`` unless the caller holds every permission of ``role``."""
    permissions = await policy.role_permissions(tx, access.org_id, role)
    if permissions is None:
        raise UnknownRole(f"This organization has no role {role!r}.", field="role")
    policy.ensure_within(access, permissions)


async def _refuse_member(tx: AsyncSession, org_id: uuid.UUID, key: str) -> None:
    """Raises ``AlreadyMember`` if the address belongs to a member of the organization."""
    user = await directory.find_user_by_email(tx, key)
    if user is not None and await tx.get(Membership, (org_id, user.id)) is not None:
        raise AlreadyMember(f"{user.email} is already a member of this organization.")


async def _revoke_open(tx: AsyncSession, *, org_id: uuid.UUID, key: str, caller: Caller, now: datetime) -> None:
    """Revoke the address's open invitations to this organization: one live token per person."""
    query = select(Invitation).where(
        Invitation.org_id == org_id,
        Invitation.email_normalized == key,
        Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > now,
    )
    for row in (await tx.scalars(query)).all():
        await _change_open(tx, row, revoked_at=now)
        data = {**_data(row), "reason": "replaced"}
        await emit(tx, INVITATION_REVOKED, data=data, actor=caller.actor, org_id=org_id)


async def _open(tx: AsyncSession, org_id: uuid.UUID, invitation_id: uuid.UUID) -> Invitation:
    row = await tx.get(Invitation, invitation_id)
    if row is None or row.org_id != org_id or row.accepted_at is not None or row.revoked_at is not None:
        raise NotFound("No such open invitation.")
    return row


async def _change_open(tx: AsyncSession, row: Invitation, **values: object) -> None:
    """Update an invitation (and ``row``, in the session) only while it is open. Raises ``NotFound`` if
    it was accepted or revoked since it was read (a concurrent accept won)."""
    changed = await tx.execute(
        update(Invitation)
        .where(
            Invitation.id == row.id,
            Invitation.org_id == row.org_id,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(**values)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound("No such open invitation.")


async def _spend(tx: AsyncSession, row: Invitation) -> None:
    """Mark the invitation accepted, if it still is what was read: open, unexpired and with the same
    token (a resend replaces it). Raises ``InvitationInvalid`` when a concurrent accept or revoke won."""
    now = utcnow()
    spent = await tx.execute(
        update(Invitation)
        .where(
            Invitation.id == row.id,
            Invitation.org_id == row.org_id,
            Invitation.token_hash == row.token_hash,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > now,
        )
        .values(accepted_at=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise InvitationInvalid()
    row.accepted_at = now


async def _invitee(tx: AsyncSession, user_id: uuid.UUID, row: Invitation) -> UserSummary:
    """The accepting user, if the invitation is theirs. Raises ``InvitationEmailMismatch``,
    ``EmailNotVerified``."""
    user = (await directory.find_users(tx, [user_id])).get(user_id)
    if user is None or user.email.strip().lower() != row.email_normalized:
        raise InvitationEmailMismatch(
            "This invitation was sent to another address: sign in with the address it was sent to."
        )
    if not user.email_verified:
        raise EmailNotVerified("Verify your email address (see the mail we sent you) before accepting.")
    return user
