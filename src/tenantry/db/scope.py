"""Scoping a transaction to one organization: the second wall of tenant isolation, on PostgreSQL.

Services of org-scoped domains name the organization of every transaction with :func:`to_org`; on
PostgreSQL this sets ``tenantry.org_id`` for the transaction, and each org-scoped table's
row-level-security policy then hides (and refuses to write) any row of another organization, even
to a query that forgot its ``WHERE org_id = …``. :func:`unscoped` is the named escape hatch for the
few lookups that must cross organizations (a secret presented at the door, a user's own list of
organizations, the audit consumer); every caller of it is named ``unscoped_*`` so review sees it.
SQLite has no row-level security: there, the services' own filters are the only wall.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from tenantry.db.direct import Direct
from tenantry.db.statements import Lane

_SET = text("SELECT set_config(:name, :value, true)")


def _postgresql(tx: Lane) -> AsyncSession | AsyncConnection | None:
    """``tx`` if it is on PostgreSQL (the database's own connections are SQLite's only)."""
    if isinstance(tx, Direct):
        return None
    dialect = tx.get_bind().dialect if isinstance(tx, AsyncSession) else tx.dialect
    return tx if dialect.name == "postgresql" else None


async def to_org(tx: Lane, org_id: uuid.UUID) -> None:
    """From now until the transaction ends, only ``org_id``'s rows exist for org-scoped tables."""
    if not isinstance(org_id, uuid.UUID):  # fail closed: no organization, no query
        raise TypeError("an org-scoped transaction needs an organization id")
    postgresql = _postgresql(tx)
    if postgresql is not None:
        await postgresql.execute(_SET, {"name": "tenantry.org_id", "value": str(org_id)})


async def unscoped(tx: Lane) -> None:
    """Lift the organization wall for this transaction (callers are named ``unscoped_*``)."""
    postgresql = _postgresql(tx)
    if postgresql is not None:
        await postgresql.execute(_SET, {"name": "tenantry.unscoped", "value": "on"})
