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
}
ALL = frozenset(PERMISSIONS)
READ = frozenset(p for p in PERMISSIONS if p.endswith(".read"))
OWNER, ADMIN, MEMBER, VIEWER = "owner", "admin", "member", "viewer"
BUILT_IN_ROLES: dict[str, tuple[str, frozenset[str]]] = {
    OWNER: ("Owner", ALL),
    # Everything but deleting the organization: so an admin can never make an owner (see ensure_within).
    ADMIN: ("Admin", ALL - {"org.delete"}),
    MEMBER: ("Member", frozenset({"org.read", "members.read", "roles.read", "teams.read"})),
    VIEWER: ("Viewer", frozenset({"org.read", "members.read", "teams.read"})),
}
DEFAULT_ROLE = MEMBER
ACCESS = "tenancy.access"  # cache name; key: the organization id
_MISSING = object()


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

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, permission: str) -> None:
        """Raises ``Forbidden`` unless this access includes ``permission``."""
        if permission not in self.permissions:
            raise Forbidden(f"You need the permission {permission!r} in this organization.", permission=permission)


@dataclass(slots=True)
class _OrgGrants:
    require_mfa: bool
    members: dict[str, tuple[str, frozenset[str]] | None] = field(default_factory=dict)


def ensure_within(access: Access, permissions: Iterable[str]) -> None:
    """Nobody hands out more than they hold. Raises ``Forbidden`` naming what the author lacks."""
    missing = sorted(set(permissions) - access.permissions)
    if missing:
        raise Forbidden(f"You cannot grant permissions you do not have: {', '.join(missing)}.", missing=missing)


def unknown_permissions(permissions: Iterable[str]) -> list[str]:
    return sorted(set(permissions) - ALL)


class Policy:
    """Authorization decisions, with each organization's grants cached in memory and dropped on every
    process when its memberships, roles or settings change."""

    def __init__(self, *, invalidation: Invalidation, cache_size: int = 10_000) -> None:
        self.invalidation = invalidation
        self.grants: LRUCache[str, object] = LRUCache(ACCESS, cache_size)
        invalidation.attach(self.grants)

    async def authorize(
        self, tx: AsyncSession, caller: Caller, org_id: uuid.UUID, permission: str | None = None
    ) -> Access:
        """Scope ``tx`` to ``org_id`` and say what ``caller`` may do there. Raises ``NotFound`` when the
        caller has no place in it, ``MfaRequiredByOrg`` when it requires a second factor the user lacks,
        ``Forbidden`` when ``permission`` is given and not held."""
        await scope.to_org(tx, org_id)
        if caller.is_api_key:
            if caller.api_key_org != org_id:
                raise NotFound("No such organization.")
            access = Access(org_id, caller, None, caller.api_key_permissions)
        else:
            access = await self._member_access(tx, caller, org_id)
        if permission is not None:
            access.require(permission)
        return access

    async def _member_access(self, tx: AsyncSession, caller: Caller, org_id: uuid.UUID) -> Access:
        grants, grant = self._cached(org_id, caller)
        if grants is None or grant is _MISSING:
            version = self.invalidation.version
            loaded = await _load(tx, org_id, caller.user_id)
            if loaded is None:
                raise NotFound("No such organization.")
            require_mfa, grant = loaded
            if version == self.invalidation.version:
                grants = grants or _OrgGrants(require_mfa=require_mfa)
                grants.members[caller.key] = grant
                self.grants.put(str(org_id), grants)
        else:
            require_mfa = grants.require_mfa
        if not isinstance(grant, tuple):  # None: not a member
            raise NotFound("No such organization.")
        if require_mfa and not caller.has_mfa:
            raise MfaRequiredByOrg()
        return Access(org_id, caller, grant[0], grant[1])

    def _cached(self, org_id: uuid.UUID, caller: Caller) -> tuple[_OrgGrants | None, object]:
        if not self.invalidation.check():
            return None, _MISSING
        grants = self.grants.get(str(org_id))
        if not isinstance(grants, _OrgGrants):
            return None, _MISSING
        return grants, grants.members.get(caller.key, _MISSING)

    async def forget(self, org_id: uuid.UUID) -> None:
        """Make every process re-read this organization's grants (they just changed)."""
        await self.invalidation.publish(ACCESS, str(org_id))


async def role_permissions(tx: AsyncSession, org_id: uuid.UUID, role: str) -> frozenset[str] | None:
    """The permissions of a built-in or custom role, or None if the organization has no such role."""
    if role in BUILT_IN_ROLES:
        return BUILT_IN_ROLES[role][1]
    found = await tx.scalar(select(Role.permissions).where(Role.org_id == org_id, Role.key == role))
    return frozenset(found) & ALL if found is not None else None


async def _load(
    tx: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID | None
) -> tuple[bool, tuple[str, frozenset[str]] | None] | None:
    """(require_mfa, (role, permissions) or None for a non-member), or None for no such organization."""
    row = (
        await tx.execute(
            select(Organization.require_mfa, Membership.role)
            .outerjoin(Membership, (Membership.org_id == Organization.id) & (Membership.user_id == user_id))
            .where(Organization.id == org_id)
        )
    ).first()
    if row is None:
        return None
    if row.role is None:
        return bool(row.require_mfa), None
    permissions = await role_permissions(tx, org_id, row.role)
    return bool(row.require_mfa), (row.role, permissions or frozenset())
