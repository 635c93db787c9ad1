"""Applying the Alembic history, from the CLI, from ``serve`` on SQLite, and from tests."""

from __future__ import annotations

import asyncio
import fcntl
import threading
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from tenantry.db.engine import _sqlite_path

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _in_own_thread(target: Callable[[], None]) -> None:
    """Run ``target`` where ``asyncio.run`` is allowed, even if the caller is inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        target()
        return
    errors: list[BaseException] = []

    def runner() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=runner)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def upgrade(url: str, revision: str = "head") -> None:
    """Apply every pending migration up to ``revision``.

    On SQLite, ``serve`` migrates by itself, so two servers started together would both try; a lock
    file beside the database lets one migrate while the other waits and then finds nothing to do.
    (On PostgreSQL, Alembic's transactional DDL and ``tenantry migrate`` being run once suffice.)
    """

    def apply() -> None:
        command.upgrade(alembic_config(url), revision)

    path = _sqlite_path(url) if url.startswith("sqlite") else None
    if path is None:
        _in_own_thread(apply)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".migrate-lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _in_own_thread(apply)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def current_revision(url: str) -> str | None:
    """The revision the database is at, or ``None`` if it was never migrated."""
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        await engine.dispose()
