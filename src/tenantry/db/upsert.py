"""Dialect-aware ``INSERT … ON CONFLICT DO NOTHING`` for idempotent consumers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.db.bulk import Bulk


def dialect_insert(dialect: Dialect, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` of ``table`` in ``dialect``'s own flavour, the one that knows ``ON CONFLICT``."""
    if dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def bulk_insert_ignoring_conflicts(table: Table, keys: Sequence[str]) -> Bulk:
    """A bulk ``INSERT … ON CONFLICT DO NOTHING`` of ``table``, each row's values in ``keys`` order: for
    consumers that write a row per event, an event handed over twice making nothing the second time."""
    return Bulk(lambda dialect: dialect_insert(dialect, table).on_conflict_do_nothing(), keys)


async def insert_ignoring_conflicts(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows``, silently skipping those that collide with a unique key already present."""
    if not rows:
        return
    statement = dialect_insert(session.get_bind().dialect, table).on_conflict_do_nothing()
    await session.execute(statement, list(rows))
