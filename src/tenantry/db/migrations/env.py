"""Alembic environment: one history for SQLite and PostgreSQL, run on the async drivers."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import tenantry.events.models
import tenantry.identity.models
import tenantry.tenancy.models
import tenantry.webhooks.models  # noqa: F401  (every table must be known to autogenerate)
from tenantry.db.base import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # WAL from the start, set here while nothing else has the file open (see tenantry.db.engine).
            await connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            await connection.commit()  # end the transaction it began: Alembic would take the migrations as part of it
        await connection.run_sync(_configure)
    await engine.dispose()


def run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set"
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_async(url))


run()
