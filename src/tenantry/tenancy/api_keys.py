"""API keys: machine credentials of one organization, acting only inside it, with only their permissions.

The key (``tnt_…``) is shown once, at creation, and kept as its SHA-256 (256 random bits: nothing
to brute-force). A key never carries more than its author holds, so a key cannot mint a stronger
key. Revocation is read from the database on the key's next request, so it stops at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.context import Actor
from tenantry.core.errors import InvalidInput, NotFound, Unauthorized
from tenantry.core.ids import digest, new_secret
from tenantry.db import scope
from tenantry.db.engine import Database
from tenantry.events.outbox import emit
from tenantry.tenancy import policy
from tenantry.tenancy.errors import UnknownRole
from tenantry.tenancy.events import API_KEY_CREATED, API_KEY_REVOKED, target
from tenantry.tenancy.models import ApiKey
from tenantry.tenancy.policy import Caller, Policy
from tenantry.tenancy.views import Page, uuid_cursor

PREFIX = "tnt_"
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    id: uuid.UUID
    name: str
    prefix: str
    role: str | None
    permissions: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    view: ApiKeyView
    key: str  # shown once


def _view(row: ApiKey, permissions: frozenset[str]) -> ApiKeyView:
    return ApiKeyView(
        row.id,
        row.name,
        row.prefix,
        row.role,
        sorted(permissions),
        row.created_at,
        row.expires_at,
        row.last_used_at,
    )


class ApiKeyService:
    def __init__(self, *, db: Database, policy: Policy) -> None:
        self.db = db
        self.policy = policy

    async def create(
        self,
        *,
        caller: Caller,
        org_id: uuid.UUID,
        name: str,
        role: str | None,
        permissions: list[str] | None,
        expires_at: datetime | None,
    ) -> NewApiKey:
        """A new key with a role or an explicit list of permissions (default: the ``member`` role), never
        more than the caller holds. Raises ``NotFound``, ``Forbidden``, ``UnknownRole``, ``InvalidInput``."""
        if role is not None and permissions is not None:
            raise InvalidInput("Give a key either a role or a list of permissions, not both.", field="permissions")
        if expires_at is not None and expires_at <= utcnow():
            raise InvalidInput("The expiry must be in the future.", field="expires_at")
        unknown = policy.unknown_permissions(permissions or [])
        if unknown:
            raise InvalidInput(f"Unknown permissions: {', '.join(unknown)}.", field="permissions")
        key = new_secret(PREFIX)
        async with self.db.transaction() as tx:
            access = await self.policy.authorize(tx, caller, org_id, "api_keys.manage")
            if permissions is None:
                role = role or policy.DEFAULT_ROLE
                granted = await policy.role_permissions(tx, org_id, role)
                if granted is None:
                    raise UnknownRole(f"This organization has no role {role!r}.", field="role")
            else:
                granted = frozenset(permissions)
            policy.ensure_within(access, granted)
            row = ApiKey(
                id=uuid.uuid4(),
                org_id=org_id,
                name=name.strip(),
                prefix=key[:12],
                key_hash=digest(key),
                role=role if permissions is None else None,
                permissions=None if permissions is None else sorted(granted),
                created_by=caller.actor.id,
                created_at=utcnow(),
                expires_at=expires_at,
            )
            tx.add(row)
            await tx.flush()
            view = _view(row, granted)
            data = {
                "api_key": {"id": str(row.id), "name": row.name, "prefix": row.prefix, "permissions": view.permissions},
                "target": target("api_key", row.id),
            }
            await emit(tx, API_KEY_CREATED, data=data, actor=caller.actor, org_id=org_id)
        return NewApiKey(view, key)

    async def list(self, *, caller: Caller, org_id: uuid.UUID, cursor: str | None, limit: int) -> Page[ApiKeyView]:
        """The organization's live keys (never their secrets), oldest first."""
        after = uuid_cursor(cursor)
        async with self.db.read() as tx:
            await self.policy.authorize(tx, caller, org_id, "api_keys.read")
            query = select(ApiKey).where(ApiKey.org_id == org_id, ApiKey.revoked_at.is_(None))
            if after is not None:
                query = query.where(ApiKey.id > after)
            rows = list((await tx.scalars(query.order_by(ApiKey.id).limit(limit + 1))).all())
            views = [_view(r, await self._permissions(tx, r) or frozenset()) for r in rows[:limit]]
        return Page(views, str(rows[limit - 1].id) if len(rows) > limit else None)

    async def revoke(self, *, caller: Caller, org_id: uuid.UUID, key_id: uuid.UUID) -> None:
        """Revoke a key; its next request is refused. Raises ``NotFound``, ``Forbidden``."""
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "api_keys.manage")
            row = await tx.get(ApiKey, key_id)
            if row is None or row.org_id != org_id or row.revoked_at is not None:
                raise NotFound("No such API key.")
            row.revoked_at = utcnow()
            permissions = sorted(await self._permissions(tx, row) or frozenset())
            data = {
                "api_key": {"id": str(row.id), "name": row.name, "prefix": row.prefix, "permissions": permissions},
                "target": target("api_key", row.id),
            }
            await emit(tx, API_KEY_REVOKED, data=data, actor=caller.actor, org_id=org_id)

    async def unscoped_authenticate(self, key: str, *, actor: Actor) -> Caller:
        """The caller an ``Authorization: Bearer tnt_…`` stands for. Raises ``Unauthorized``. The key names
        its organization, so this lookup by secret is the one that must cross organizations."""
        now = utcnow()
        async with self.db.read() as tx:
            await scope.unscoped(tx)
            row = await tx.scalar(select(ApiKey).where(ApiKey.key_hash == digest(key)))
            if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
                raise Unauthorized("This API key is invalid, revoked or expired.")
            permissions = await self._permissions(tx, row)
        if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
            async with self.db.core_transaction() as tx:
                await scope.to_org(tx, row.org_id)
                await tx.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        return Caller(
            actor=Actor(type="api_key", id=str(row.id), ip=actor.ip, user_agent=actor.user_agent),
            api_key_id=row.id,
            api_key_org=row.org_id,
            api_key_permissions=permissions or frozenset(),
        )

    @staticmethod
    async def _permissions(tx: AsyncSession, row: ApiKey) -> frozenset[str] | None:
        """A key with a role follows the role as it changes; one with a list keeps that list."""
        if row.role is not None:
            return await policy.role_permissions(tx, row.org_id, row.role)
        return frozenset(row.permissions or []) & policy.ALL
