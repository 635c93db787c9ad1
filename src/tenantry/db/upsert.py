"""Dialect-aware ``INSERT … ON CONFLICT DO NOTHING`` for idempotent consumers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


async def insert_ignoring_conflicts(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows``, silently skipping those that collide with a unique key already present."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    await session.execute(module.insert(table).on_conflict_do_nothing(), list(rows))


async def insert_new(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], *, key: str) -> set[Any]:
    """Like :func:`insert_ignoring_conflicts`, and say which rows went in: the ``key`` column of each."""
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).on_conflict_do_nothing().returning(table.c[key])
    return set((await session.execute(statement, list(rows))).scalars().all())
