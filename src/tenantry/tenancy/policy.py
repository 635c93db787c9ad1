"""Who may do what inside an organization: decided here, once, for every door.

REST, and later GraphQL, Socket.IO and the console, ask :meth:`Policy.authorize` before touching an
organization. Its answers protect three rules:
- an organization you do not belong to does not exist for you (404 ``not_found``, never 403), and
  neither does anything in it;
- inside one you belong to, lacking a permission is 403 ``forbidden``;
- nobody hands out more than they hold: a role, a role change or an API key may only carry
  permissions its author has (:func:`ensure_within`).
It also scopes the caller's transaction to the organization (row-level security on PostgreSQL).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.context import Actor
from tenantry.core.errors import Forbidden, NotFound
from tenantry.db import scope
from tenantry.perf.cache import Invalidation, LRUCache
from tenantry.tenancy.errors import MfaRequiredByOrg
from tenantry.tenancy.models import Membership, Organization, Role
from tenantry.tenancy.views import OrgView

PERMISSIONS: dict[str, str] = {
    "org.read": "See the organization: its name, slug and settings.",
    "org.update": "Rename the organization and change its settings (required MFA, allowed email domains).",
    "org.delete": "Delete the organization and everything in it.",
    "members.read": "See who belongs to the organization, and their roles.",
    "members.manage": "Change members' roles and remove members.",
    "roles.read": "See the organization's roles and their permissions.",
    "roles.manage": "Create, change and delete custom roles.",
    "teams.read": "See the organization's teams and who is in them.",
    "teams.manage": "Create, rename and delete teams, and add or remove their members.",
    "invitations.read": "See pending invitations.",
    "invitations.manage": "Invite people, resend and revoke invitations.",
    "api_keys.read": "See the organization's API keys (never their secrets).",
    "api_keys.manage": "Create and revoke API keys.",
    "audit.read": "Read the audit log.",
    "webhooks.read": "See the organization's webhook endpoints and their delivery logs (never their secrets).",
    "webhooks.manage": "Add, change and remove webhook endpoints, read and rotate their secrets, resend deliveries.",
}
ALL = frozenset(PERMISSIONS)
READ = frozenset(p for p in PERMISSIONS if p.endswith(".read"))
OWNER, ADMIN, MEMBER, VIEWER = "owner", "admin", "member", "viewer"
BUILT_IN_ROLES: dict[str, tuple[str, frozenset[str]]] = {
    OWNER: ("Owner", ALL),
    # Everything but deleting the organization: so an admin can never make an owner (see ensure_within).
    ADMIN: ("Admin", ALL - {"org.delete"}),
    MEMBER: ("Member", frozenset({"org.read", "members.read", "roles.read", "teams.read", "webhooks.read"})),
    VIEWER: ("Viewer", frozenset({"org.read", "members.read", "teams.read"})),
}
DEFAULT_ROLE = MEMBER
ACCESS = "tenancy.access"  # cache name; key: the organization id
_MISSING = object()
_API_KEY = object()  # an API key's grant: its own permissions, in its own organization only
USERS = "identity.user"  # the identity cache whose drops also drop cached organizations


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling an org-scoped route: a signed-in user, or an API key of one organization."""

    actor: Actor
    user_id: uuid.UUID | None = None
    has_mfa: bool = False
    api_key_id: uuid.UUID | None = None
    api_key_org: uuid.UUID | None = None
    api_key_permissions: frozenset[str] = frozenset()

    @property
    def is_api_key(self) -> bool:
        return self.api_key_id is not None

    @property
    def key(self) -> str:
        return f"k:{self.api_key_id}" if self.api_key_id else f"u:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Access:
    """What ``caller`` may do in ``org_id``: answered by :meth:`Policy.authorize`."""

    org_id: uuid.UUID
    caller: Caller
    role: str | None  # the member's role; None for an API key
    permissions: frozenset[str]
    org: OrgView

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, permission: str) -> None:
        """Raises ``Forbidden`` unless this access includes ``permission``."""
        if permission not in self.permissions:
            raise Forbidden(f"You need the permission {permission!r} in this organization.", permission=permission)


@dataclass(slots=True)
class OrgEntry:
    """What memory holds of one organization: a snapshot of it, its members' grants as they were asked
    for, and pages built from them (member lists). Dropped as a whole when anything in it changes."""

    org: OrgView
    grants: dict[str, tuple[str, frozenset[str]] | None] = field(default_factory=dict)
    pages: dict[str, object] = field(default_factory=dict)


def ensure_within(access: Access, permissions: Iterable[str]) -> None:
    """Nobody hands out more than they hold. Raises ``Forbidden`` naming what the author lacks."""
    missing = sorted(set(permissions) - access.permissions)
    if missing:
        raise Forbidden(f"You cannot grant permissions you do not have: {', '.join(missing)}.", missing=missing)


def unknown_permissions(permissions: Iterable[str]) -> list[str]:
    return sorted(set(permissions) - ALL)


class Policy:
    """Authorization decisions. Each organization's snapshot and grants are cached in memory and dropped
    on every process when its memberships, roles or settings change (:meth:`forget`), or when any user
    changes (names and second factors are part of what is cached)."""

    def __init__(self, *, invalidation: Invalidation, cache_size: int = 10_000) -> None:
        self.invalidation = invalidation
        self.orgs: LRUCache[str, object] = LRUCache(ACCESS, cache_size)
        invalidation.attach(self.orgs)
        invalidation.follow(USERS, self.orgs)

    async def authorize(
        self, tx: AsyncSession, caller: Caller, org_id: uuid.UUID, permission: str | None = None
    ) -> Access:
        """Scope ``tx`` to ``org_id`` and say what ``caller`` may do there. Raises ``NotFound`` when the
        caller has no place in it, ``MfaRequiredByOrg`` when it requires a second factor the user lacks,
        ``Forbidden`` when ``permission`` is given and not held."""
        await scope.to_org(tx, org_id)
        entry, grant = self._cached(org_id, caller)
        if entry is None or grant is _MISSING:
            version = self.invalidation.version
            entry, grant = await self._load(tx, org_id, caller, entry)
            if version == self.invalidation.version and self.invalidation.check():
                self.orgs.put(str(org_id), entry)
        return _decide(caller, entry, grant, permission)

    def peek(self, caller: Caller, org_id: uuid.UUID, permission: str | None = None) -> Access | None:
        """The same decision from memory alone, or None when memory does not know (then ``authorize``).
        Lets a hot read answer without opening a transaction."""
        entry, grant = self._cached(org_id, caller)
        if entry is None or grant is _MISSING:
            return None
        return _decide(caller, entry, grant, permission)

    def entry(self, org_id: uuid.UUID) -> OrgEntry | None:
        """The cached entry of an organization (to keep pages built for it beside its grants)."""
        found = self.orgs.get(str(org_id)) if self.invalidation.check() else None
        return found if isinstance(found, OrgEntry) else None

    def _cached(self, org_id: uuid.UUID, caller: Caller) -> tuple[OrgEntry | None, object]:
        entry = self.entry(org_id)
        if entry is None:
            return None, _MISSING
        return entry, (_API_KEY if caller.is_api_key else entry.grants.get(caller.key, _MISSING))

    async def _load(
        self, tx: AsyncSession, org_id: uuid.UUID, caller: Caller, entry: OrgEntry | None
    ) -> tuple[OrgEntry, object]:
        """One query: the organization and the caller's membership (a custom role costs one more)."""
        row = (
            await tx.execute(
                select(Organization, Membership.role)
                .outerjoin(Membership, (Membership.org_id == Organization.id) & (Membership.user_id == caller.user_id))
                .where(Organization.id == org_id)
            )
        ).first()
        if row is None:
            raise NotFound("No such organization.")
        entry = entry or OrgEntry(OrgView.of(row[0]))
        if caller.is_api_key:
            return entry, _API_KEY
        grant = None if row.role is None else (row.role, await role_permissions(tx, org_id, row.role) or frozenset())
        entry.grants[caller.key] = grant
        return entry, grant

    async def forget(self, org_id: uuid.UUID) -> None:
        """Make every process re-read this organization (its memberships, roles or settings changed)."""
        await self.invalidation.publish(ACCESS, str(org_id))


def _decide(caller: Caller, entry: OrgEntry, grant: object, permission: str | None) -> Access:
    org = entry.org
    if grant is _API_KEY:
        if caller.api_key_org != org.id:
            raise NotFound("No such organization.")
        access = Access(org.id, caller, None, caller.api_key_permissions, org)
    else:
        if not isinstance(grant, tuple):  # None: not a member
            raise NotFound("No such organization.")
        if org.require_mfa and not caller.has_mfa:
            raise MfaRequiredByOrg()
        access = Access(org.id, caller, grant[0], grant[1], org)
    if permission is not None:
        access.require(permission)
    return access


async def role_permissions(tx: AsyncSession, org_id: uuid.UUID, role: str) -> frozenset[str] | None:
    """The permissions of a built-in or custom role, or None if the organization has no such role."""
    if role in BUILT_IN_ROLES:
        return BUILT_IN_ROLES[role][1]
    found = await tx.scalar(select(Role.permissions).where(Role.org_id == org_id, Role.key == role))
    return frozenset(found) & ALL if found is not None else None
