"""Custom roles beside the built-in owner, admin, member and viewer.

A custom role is a named set of permissions of one organization, held by members and API keys by its
key. Two rules protect it: nobody creates or changes a role to carry more than they hold themselves
(so a role cannot be a ladder to permissions one lacks), and a role still held by someone cannot be
deleted. Built-in roles are the same everywhere and never change (``BuiltInRole``, 409).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.errors import InvalidInput, NotFound
from tenantry.db.engine import Database
from tenantry.events.outbox import emit
from tenantry.tenancy import policy
from tenantry.tenancy.errors import BuiltInRole, RoleExists, RoleInUse
from tenantry.tenancy.events import ROLE_CREATED, ROLE_DELETED, ROLE_UPDATED, target
from tenantry.tenancy.models import ApiKey, Membership, Role
from tenantry.tenancy.policy import Caller, Policy

_KEY = re.compile(r"^[a-z][a-z0-9_-]{1,63}$")


@dataclass(frozen=True, slots=True)
class RoleView:
    key: str
    name: str
    permissions: list[str]
    built_in: bool


@dataclass(frozen=True, slots=True)
class RoleChanges:
    name: str | None = None
    permissions: list[str] | None = None


def _view(role: Role) -> RoleView:
    return RoleView(role.key, role.name, sorted(set(role.permissions) & policy.ALL), False)


def _built_in() -> list[RoleView]:
    return [RoleView(key, name, sorted(granted), True) for key, (name, granted) in policy.BUILT_IN_ROLES.items()]


def _check_key(key: str) -> str:
    if not _KEY.match(key):
        raise InvalidInput(
            "A role key has 2 to 64 lower-case letters, digits, '_' and '-', starting with a letter (e.g. auditor).",
            field="key",
        )
    return key


def _check_permissions(permissions: list[str]) -> frozenset[str]:
    unknown = policy.unknown_permissions(permissions)
    if unknown:
        raise InvalidInput(f"Unknown permissions: {', '.join(unknown)}.", field="permissions")
    return frozenset(permissions)


def _role_data(org_id: uuid.UUID, view: RoleView) -> dict[str, object]:
    return {
        "organization": {"id": str(org_id)},
        "role": {"key": view.key, "name": view.name, "permissions": view.permissions},
        "target": target("role", view.key),
    }


class RoleService:
    def __init__(self, *, db: Database, policy: Policy) -> None:
        self.db = db
        self.policy = policy

    async def create(
        self, *, caller: Caller, org_id: uuid.UUID, key: str, name: str, permissions: list[str]
    ) -> RoleView:
        """A new custom role carrying no more than the caller holds. Raises ``NotFound``, ``Forbidden``,
        ``InvalidInput``, ``RoleExists`` (the key of a built-in or existing role)."""
        try:
            async with self.db.transaction() as tx:
                access = await self.policy.authorize(tx, caller, org_id, "roles.manage")
                granted = _check_permissions(permissions)
                policy.ensure_within(access, granted)
                if _check_key(key) in policy.BUILT_IN_ROLES or await _find(tx, org_id, key) is not None:
                    raise RoleExists(f"This organization already has a role {key!r}.", field="key")
                now = utcnow()
                role = Role(
                    org_id=org_id,
                    key=key,
                    name=name.strip(),
                    permissions=sorted(granted),
                    created_at=now,
                    updated_at=now,
                )
                tx.add(role)
                await tx.flush()
                view = _view(role)
                await emit(tx, ROLE_CREATED, data=_role_data(org_id, view), actor=caller.actor, org_id=org_id)
        except IntegrityError as exc:  # created by someone else between our look and our insert
            raise RoleExists(f"This organization already has a role {key!r}.", field="key") from exc
        return view

    async def update(self, *, caller: Caller, org_id: uuid.UUID, key: str, changes: RoleChanges) -> RoleView:
        """Rename a custom role or change its permissions; members and keys holding it get the new ones on
        their next request. The caller must hold both the old and the new permissions. Raises
        ``NotFound``, ``Forbidden``, ``InvalidInput``, ``BuiltInRole``."""
        async with self.db.transaction() as tx:
            access = await self.policy.authorize(tx, caller, org_id, "roles.manage")
            role = await _get(tx, org_id, key)
            before = _view(role)
            granted = _check_permissions(changes.permissions) if changes.permissions is not None else None
            policy.ensure_within(access, set(before.permissions) | (granted or frozenset()))
            if changes.name is not None:
                role.name = changes.name.strip()
            if granted is not None:
                role.permissions = sorted(granted)
            after = _view(role)
            if after != before:
                role.updated_at = utcnow()
                data = {**_role_data(org_id, after), "changes": _changes(before, after)}
                await emit(tx, ROLE_UPDATED, data=data, actor=caller.actor, org_id=org_id)
        await self.policy.forget(org_id)
        return after

    async def delete(self, *, caller: Caller, org_id: uuid.UUID, key: str) -> None:
        """Delete a custom role nobody holds any more. Raises ``NotFound``, ``Forbidden`` (it carries more
        than the caller holds), ``BuiltInRole``, ``RoleInUse`` (members or live API keys hold it)."""
        async with self.db.transaction() as tx:
            access = await self.policy.authorize(tx, caller, org_id, "roles.manage")
            role = await _get(tx, org_id, key, lock=True)
            view = _view(role)
            policy.ensure_within(access, view.permissions)
            members, keys = await _holders(tx, org_id, key)
            if members or keys:
                raise RoleInUse(
                    f"{members} member(s) and {keys} API key(s) still have the role {key!r}: "
                    "give them another role (or revoke the keys) first.",
                    members=members,
                    api_keys=keys,
                )
            await tx.delete(role)
            await emit(tx, ROLE_DELETED, data=_role_data(org_id, view), actor=caller.actor, org_id=org_id)
        await self.policy.forget(org_id)

    async def list(self, *, caller: Caller, org_id: uuid.UUID) -> list[RoleView]:
        """The built-in roles, then the organization's custom ones by key. Raises ``NotFound``, ``Forbidden``."""
        async with self.db.read() as tx:
            await self.policy.authorize(tx, caller, org_id, "roles.read")
            rows = (await tx.scalars(select(Role).where(Role.org_id == org_id).order_by(Role.key))).all()
        return _built_in() + [_view(r) for r in rows]


def _changes(before: RoleView, after: RoleView) -> dict[str, object]:
    changed: dict[str, object] = {}
    if before.name != after.name:
        changed["name"] = after.name
    if before.permissions != after.permissions:
        changed["permissions"] = after.permissions
    return changed


async def _find(tx: AsyncSession, org_id: uuid.UUID, key: str, *, lock: bool = False) -> Role | None:
    # Filtered by org_id although the transaction is scoped: on SQLite this filter is the only wall.
    query = select(Role).where(Role.org_id == org_id, Role.key == key)
    if lock:  # on PostgreSQL, holds off changes to the role while it is being deleted
        query = query.with_for_update()
    found: Role | None = await tx.scalar(query)
    return found


async def _get(tx: AsyncSession, org_id: uuid.UUID, key: str, *, lock: bool = False) -> Role:
    """A custom role of the organization, for changing. Raises ``BuiltInRole``, ``NotFound``."""
    if key in policy.BUILT_IN_ROLES:
        raise BuiltInRole(f"The built-in role {key!r} cannot be changed or deleted; create a custom role instead.")
    role = await _find(tx, org_id, key, lock=lock)
    if role is None:
        raise NotFound("No such role.")
    return role


async def _holders(tx: AsyncSession, org_id: uuid.UUID, key: str) -> tuple[int, int]:
    """How many members and usable API keys (neither revoked nor expired) hold the role ``key``."""
    members = await tx.scalar(
        select(func.count()).select_from(Membership).where(Membership.org_id == org_id, Membership.role == key)
    )
    keys = await tx.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(
            ApiKey.org_id == org_id,
            ApiKey.role == key,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > utcnow()),
        )
    )
    return int(members or 0), int(keys or 0)
