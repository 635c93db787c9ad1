"""Organizations and their members: creating, reading, changing, leaving.

Every method that touches an organization first asks the policy (``authorize``), which scopes the
transaction to that organization and raises ``NotFound`` for anyone without a place in it. Changes
to roles obey two rules: nobody grants (or takes away) more than they hold, and an organization
keeps at least one owner.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.errors import InvalidInput, NotFound
from tenantry.db import scope
from tenantry.db.engine import Database
from tenantry.events.outbox import emit
from tenantry.identity import directory
from tenantry.tenancy import policy
from tenantry.tenancy.errors import AlreadyMember, LastOwner, MfaRequiredByOrg, SlugTaken, UnknownRole
from tenantry.tenancy.events import (
    MEMBER_ADDED,
    MEMBER_REMOVED,
    MEMBER_UPDATED,
    ORG_CREATED,
    ORG_DELETED,
    ORG_UPDATED,
    org_data,
    target,
)
from tenantry.tenancy.models import Membership, Organization
from tenantry.tenancy.policy import Caller, Policy
from tenantry.tenancy.views import MemberView, OrgView, Page, uuid_cursor

PAGES_KEPT = 32
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


@dataclass(frozen=True, slots=True)
class MyOrg:
    id: uuid.UUID
    name: str
    slug: str
    role: str


@dataclass(frozen=True, slots=True)
class OrgChanges:
    name: str | None = None
    slug: str | None = None
    require_mfa: bool | None = None
    allowed_email_domains: list[str] | None = None


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48].strip("-")
    return slug or "org"


def _check_slug(slug: str) -> str:
    if not _SLUG.match(slug):
        raise InvalidInput(
            "A slug has 1 to 64 lower-case letters, digits and inner hyphens (e.g. acme-labs).", field="slug"
        )
    return slug


def _check_domains(domains: list[str]) -> list[str]:
    cleaned = sorted({d.strip().lower().lstrip("@") for d in domains})
    bad = [d for d in cleaned if not _DOMAIN.match(d)]
    if bad:
        raise InvalidInput(f"Not an email domain: {', '.join(bad)}.", field="allowed_email_domains")
    return cleaned


class OrgService:
    def __init__(self, *, db: Database, policy: Policy) -> None:
        self.db = db
        self.policy = policy

    # -- organizations -------------------------------------------------------------------------------
    async def create(self, *, caller: Caller, name: str, slug: str | None) -> OrgView:
        """Create an organization whose first owner is the caller. Raises ``SlugTaken``, ``InvalidInput``."""
        if caller.user_id is None:
            raise InvalidInput("Only a signed-in user can create an organization.")
        wanted = _check_slug(slug) if slug else None
        for attempt in range(4):
            chosen = wanted or (slugify(name) if attempt == 0 else f"{slugify(name)}-{secrets.token_hex(3)}")
            try:
                return await self._insert(caller, name=name.strip(), slug=chosen)
            except IntegrityError as exc:
                if wanted:
                    raise SlugTaken() from exc
        raise SlugTaken()

    async def _insert(self, caller: Caller, *, name: str, slug: str) -> OrgView:
        assert caller.user_id is not None
        org = Organization(id=uuid.uuid4(), name=name, slug=slug, require_mfa=False, allowed_email_domains=[])
        async with self.db.transaction() as tx:
            await scope.to_org(tx, org.id)
            tx.add(org)
            await tx.flush()
            tx.add(Membership(org_id=org.id, user_id=caller.user_id, role=policy.OWNER))
            await tx.flush()
            await emit(tx, ORG_CREATED, data={"organization": org_data(org)}, actor=caller.actor, org_id=org.id)
            member = {"user_id": str(caller.user_id), "role": policy.OWNER}
            await emit(
                tx,
                MEMBER_ADDED,
                data={"organization": {"id": str(org.id)}, "member": member, "target": target("user", caller.user_id)},
                actor=caller.actor,
                org_id=org.id,
            )
        return OrgView.of(org)

    async def unscoped_list_mine(self, *, caller: Caller, cursor: str | None, limit: int) -> Page[MyOrg]:
        """The caller's organizations, with their role in each (an API key sees its own organization).
        Crosses organizations by nature, hence unscoped, filtered by the caller's own memberships."""
        after = uuid_cursor(cursor)
        async with self.db.read() as tx:
            await scope.unscoped(tx)
            query = select(Organization.id, Organization.name, Organization.slug, Membership.role).join(
                Membership, Membership.org_id == Organization.id
            )
            if caller.is_api_key:
                query = select(Organization.id, Organization.name, Organization.slug, func.null().label("role"))
                query = query.where(Organization.id == caller.api_key_org)
            else:
                query = query.where(Membership.user_id == caller.user_id)
            if after is not None:
                query = query.where(Organization.id > after)
            rows = (await tx.execute(query.order_by(Organization.id).limit(limit + 1))).all()
        items = [MyOrg(r.id, r.name, r.slug, r.role or "api_key") for r in rows[:limit]]
        return Page(items, str(rows[limit - 1].id) if len(rows) > limit else None)

    async def get(self, *, caller: Caller, org_id: uuid.UUID) -> OrgView:
        """One organization the caller belongs to. Raises ``NotFound``. Answered from memory when the
        policy holds this organization (its snapshot is dropped on every change)."""
        known = self.policy.peek(caller, org_id, "org.read")
        if known is not None:
            return known.org
        async with self.db.read() as tx:
            return (await self.policy.authorize(tx, caller, org_id, "org.read")).org

    async def update(self, *, caller: Caller, org_id: uuid.UUID, changes: OrgChanges) -> OrgView:
        """Rename, re-slug or change settings. Raises ``NotFound``, ``Forbidden``, ``SlugTaken``,
        ``MfaRequiredByOrg`` (requiring MFA without having it oneself would lock the author out)."""
        try:
            async with self.db.transaction() as tx:
                await self.policy.authorize(tx, caller, org_id, "org.update")
                org = await _org(tx, org_id)
                before = org_data(org)
                self._apply(org, changes, caller)
                await tx.flush()
                after = org_data(org)
                if after != before:
                    org.updated_at = utcnow()
                    data = {"organization": after, "changes": {k: v for k, v in after.items() if before[k] != v}}
                    await emit(tx, ORG_UPDATED, data=data, actor=caller.actor, org_id=org_id)
        except IntegrityError as exc:
            raise SlugTaken() from exc
        await self.policy.forget(org_id)
        return OrgView.of(org)

    @staticmethod
    def _apply(org: Organization, changes: OrgChanges, caller: Caller) -> None:
        if changes.name is not None:
            org.name = changes.name.strip()
        if changes.slug is not None:
            org.slug = _check_slug(changes.slug)
        if changes.allowed_email_domains is not None:
            org.allowed_email_domains = _check_domains(changes.allowed_email_domains)
        if changes.require_mfa is not None:
            if changes.require_mfa and not caller.is_api_key and not caller.has_mfa:
                raise MfaRequiredByOrg("Turn on two-step verification for yourself before requiring it of everyone.")
            org.require_mfa = changes.require_mfa

    async def delete(self, *, caller: Caller, org_id: uuid.UUID) -> None:
        """Delete the organization and everything in it (owners only). Raises ``NotFound``, ``Forbidden``."""
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "org.delete")
            org = await _org(tx, org_id)
            await emit(tx, ORG_DELETED, data={"organization": org_data(org)}, actor=caller.actor, org_id=org_id)
            await tx.delete(org)
        await self.policy.forget(org_id)

    # -- members ---------------------------------------------------------------------------------------
    async def list_members(
        self, *, caller: Caller, org_id: uuid.UUID, cursor: str | None, limit: int
    ) -> Page[MemberView]:
        """A page of members, oldest account first. Two queries whatever the page holds; then kept in
        memory beside the organization's grants, and dropped with them on any membership change."""
        page_key = f"{cursor}|{limit}"
        if self.policy.peek(caller, org_id, "members.read") is not None:
            entry = self.policy.entry(org_id)
            cached = entry.pages.get(page_key) if entry is not None else None
            if isinstance(cached, Page):
                return cached
        after = uuid_cursor(cursor)
        version = self.policy.invalidation.version
        async with self.db.read() as tx:
            await self.policy.authorize(tx, caller, org_id, "members.read")
            query = select(Membership.user_id, Membership.role, Membership.joined_at).where(Membership.org_id == org_id)
            if after is not None:
                query = query.where(Membership.user_id > after)
            rows = (await tx.execute(query.order_by(Membership.user_id).limit(limit + 1))).all()
            users = await directory.find_users(tx, [r.user_id for r in rows[:limit]])
        items = [
            MemberView(r.user_id, users[r.user_id].email, users[r.user_id].name, r.role, r.joined_at)
            for r in rows[:limit]
            if r.user_id in users
        ]
        page = Page(items, str(rows[limit - 1].user_id) if len(rows) > limit else None)
        entry = self.policy.entry(org_id)
        if entry is not None and version == self.policy.invalidation.version:
            if len(entry.pages) >= PAGES_KEPT:  # a bounded handful per organization: first pages mostly
                entry.pages.clear()
            entry.pages[page_key] = page
        return page

    async def update_member(self, *, caller: Caller, org_id: uuid.UUID, user_id: uuid.UUID, role: str) -> MemberView:
        """Give a member another role. Raises ``NotFound``, ``Forbidden`` (granting or changing more than
        one holds), ``UnknownRole``, ``LastOwner``."""
        async with self.db.transaction() as tx:
            access = await self.policy.authorize(tx, caller, org_id, "members.manage")
            member = await _member(tx, org_id, user_id)
            new_permissions = await policy.role_permissions(tx, org_id, role)
            if new_permissions is None:
                raise UnknownRole(f"This organization has no role {role!r}.", field="role")
            old_permissions = await policy.role_permissions(tx, org_id, member.role) or frozenset()
            policy.ensure_within(access, old_permissions | new_permissions)
            if member.role == policy.OWNER and role != policy.OWNER:
                await _keep_an_owner(tx, org_id)
            previous, member.role = member.role, role
            data = {
                "organization": {"id": str(org_id)},
                "member": {"user_id": str(user_id), "role": role, "previous_role": previous},
                "target": target("user", user_id),
            }
            await emit(tx, MEMBER_UPDATED, data=data, actor=caller.actor, org_id=org_id)
            users = await directory.find_users(tx, [user_id])
        await self.policy.forget(org_id)
        user = users[user_id]
        return MemberView(user_id, user.email, user.name, role, member.joined_at)

    async def remove_member(self, *, caller: Caller, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Remove a member, or leave (removing oneself needs no permission). Raises ``NotFound``,
        ``Forbidden``, ``LastOwner``."""
        async with self.db.transaction() as tx:
            access = await self.policy.authorize(tx, caller, org_id)
            member = await _member(tx, org_id, user_id)
            if user_id != caller.user_id:
                access.require("members.manage")
                policy.ensure_within(access, await policy.role_permissions(tx, org_id, member.role) or frozenset())
            if member.role == policy.OWNER:
                await _keep_an_owner(tx, org_id)
            await tx.delete(member)
            data = {
                "organization": {"id": str(org_id)},
                "member": {"user_id": str(user_id), "role": member.role},
                "target": target("user", user_id),
            }
            await emit(tx, MEMBER_REMOVED, data=data, actor=caller.actor, org_id=org_id)
        await self.policy.forget(org_id)

    async def join(self, *, caller: Caller, org_id: uuid.UUID) -> MemberView:
        """Join an organization that admits the caller's verified email domain, with the default role.
        Raises ``NotFound`` (no such organization, or it does not admit the caller: the same answer, so
        nothing is learnt about organizations one cannot join), ``AlreadyMember``."""
        if caller.user_id is None:
            raise NotFound("No such organization.")
        async with self.db.transaction() as tx:
            await scope.to_org(tx, org_id)
            org = await tx.get(Organization, org_id)
            users = await directory.find_users(tx, [caller.user_id])
            user = users.get(caller.user_id)
            if org is None or user is None or not user.email_verified:
                raise NotFound("No such organization.")
            if user.email.rsplit("@", 1)[-1].lower() not in (org.allowed_email_domains or []):
                raise NotFound("No such organization.")
            if await tx.get(Membership, (org_id, caller.user_id)) is not None:
                raise AlreadyMember()
            member = await add_member(
                tx, org_id=org_id, user_id=caller.user_id, role=policy.DEFAULT_ROLE, caller=caller
            )
        await self.policy.forget(org_id)
        return MemberView(caller.user_id, user.email, user.name, member.role, member.joined_at)


async def add_member(
    tx: AsyncSession, *, org_id: uuid.UUID, user_id: uuid.UUID, role: str, caller: Caller
) -> Membership:
    """Insert a membership and its event (joining by domain, accepting an invitation)."""
    member = Membership(org_id=org_id, user_id=user_id, role=role, joined_at=utcnow())
    await tx.execute(
        insert(Membership.__table__),  # type: ignore[arg-type]
        {"org_id": org_id, "user_id": user_id, "role": role, "joined_at": member.joined_at},
    )
    data = {
        "organization": {"id": str(org_id)},
        "member": {"user_id": str(user_id), "role": role},
        "target": target("user", user_id),
    }
    await emit(tx, MEMBER_ADDED, data=data, actor=caller.actor, org_id=org_id)
    return member


async def _org(tx: AsyncSession, org_id: uuid.UUID) -> Organization:
    org = await tx.get(Organization, org_id)
    if org is None:
        raise NotFound("No such organization.")
    return org


async def _member(tx: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID) -> Membership:
    member = await tx.get(Membership, (org_id, user_id))
    if member is None:
        raise NotFound("No such member.")
    return member


async def _keep_an_owner(tx: AsyncSession, org_id: uuid.UUID) -> None:
    """Raises ``LastOwner`` unless another owner remains. Locks the owners' rows on PostgreSQL, so two
    owners demoting each other at once cannot both succeed."""
    owners = (
        await tx.execute(
            select(Membership.user_id)
            .where(Membership.org_id == org_id, Membership.role == policy.OWNER)
            .with_for_update()
        )
    ).all()
    if len(owners) <= 1:
        raise LastOwner()
