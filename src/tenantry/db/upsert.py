"""Dialect-aware ``INSERT … ON CONFLICT DO NOTHING`` for idempotent consumers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_insert(dialect: Dialect, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` of ``table`` in ``dialect``'s own flavour, the one that knows ``ON CONFLICT``."""
    if dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def insert_ignoring_conflicts(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows``, silently skipping those that collide with a unique key already present."""
    if not rows:
        return
    statement = dialect_insert(session.get_bind().dialect, table).on_conflict_do_nothing()
    await session.execute(statement, list(rows))


async def insert_new(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], *, key: str) -> set[Any]:
    """Like :func:`insert_ignoring_conflicts`, and say which rows went in: the ``key`` column of each."""
    if not rows:
        return set()
    statement = dialect_insert(session.get_bind().dialect, table).on_conflict_do_nothing().returning(table.c[key])
    return set((await session.execute(statement, list(rows))).scalars().all())
