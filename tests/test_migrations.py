"""The Alembic history: one for both databases, safe to apply from several processes at once."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tenantry.db import migrate


def test_two_processes_migrating_a_fresh_sqlite_file_together_both_succeed(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    errors: list[BaseException] = []

    def apply() -> None:
        try:
            migrate.upgrade(url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=apply) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert asyncio.run(migrate.current_revision(url)) == migrate.head_revision()


def test_both_databases_end_at_the_same_head(migrated_databases: dict[str, str]) -> None:
    revisions = {name: asyncio.run(migrate.current_revision(url)) for name, url in migrated_databases.items()}

    assert set(revisions.values()) == {migrate.head_revision()}
