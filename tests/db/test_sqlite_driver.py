"""SQLite statements take one trip to the driver's thread each, and behave as through SQLAlchemy's own adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from tenantry.db.engine import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with database.writer.begin() as connection:
        await connection.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)"))
    yield database
    await database.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every function sent to a connection's thread."""
    sent: list[str] = []
    send = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await send(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return sent


async def test_a_transaction_takes_one_trip_per_statement_and_one_to_end(db: Database, trips: list[str]) -> None:
    async with db.reader.connect() as connection:
        trips.clear()
        assert (await connection.execute(text("SELECT count(*) FROM item"))).scalar() == 0
    assert trips == ["_execute", "rollback"]  # BEGIN with the SELECT, then the pool's reset (4 + 4 + 1 before)

    trips.clear()
    async with db.core_transaction() as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('one')"))
        await connection.execute(text("INSERT INTO item (name) VALUES ('two')"))
    assert trips == ["_execute", "_execute", "commit"]  # BEGIN IMMEDIATE with the first INSERT, the second, COMMIT

    trips.clear()
    async with db.core_transaction():
        pass
    assert trips == []  # nothing ran: nothing to begin or end


async def test_a_read_transaction_sees_one_snapshot_though_its_begin_went_with_its_first_statement(
    db: Database,
) -> None:
    async with db.reader.connect() as reading:
        assert (await reading.execute(text("SELECT count(*) FROM item"))).scalar() == 0
        async with db.core_transaction() as writing:
            await writing.execute(text("INSERT INTO item (name) VALUES ('committed meanwhile')"))
        assert (await reading.execute(text("SELECT count(*) FROM item"))).scalar() == 0
    async with db.reader.connect() as reading:
        streamed = await reading.stream(text("SELECT name FROM item"))  # a server-side cursor, first in its transaction
        assert [row.name async for row in streamed] == ["committed meanwhile"]


async def test_rows_row_counts_and_inserted_ids_come_back_as_from_the_driver(db: Database) -> None:
    async with db.core_transaction() as connection:
        inserted = await connection.execute(text("INSERT INTO item (name) VALUES ('one')"))
        assert (inserted.lastrowid, inserted.rowcount) == (1, 1)
        many = await connection.execute(text("INSERT INTO item (name) VALUES (:name)"), [{"name": n} for n in "abc"])
        assert many.rowcount == 3
        changed = await connection.execute(text("UPDATE item SET name = name || '!' WHERE id > 1"))
        assert changed.rowcount == 3
    async with db.reader.connect() as connection:
        rows = (await connection.execute(text("SELECT id, name FROM item ORDER BY id"))).all()
        assert [tuple(row) for row in rows] == [(1, "one"), (2, "a!"), (3, "b!"), (4, "c!")]
        streamed = await connection.stream(text("SELECT name FROM item ORDER BY id"))
        assert [row.name async for row in streamed] == ["one", "a!", "b!", "c!"]  # a server-side cursor


async def test_a_failing_statement_raises_sqlalchemys_error_and_rolls_back_its_transaction(db: Database) -> None:
    async def insert_twice() -> None:
        async with db.core_transaction() as connection:
            await connection.execute(text("INSERT INTO item (name) VALUES ('one')"))
            await connection.execute(text("INSERT INTO item (name) VALUES ('one')"))

    async def read_nothing() -> None:
        async with db.reader.connect() as connection:
            await connection.execute(text("SELECT nothing FROM nowhere"))

    with pytest.raises(IntegrityError):
        await insert_twice()
    with pytest.raises(OperationalError):
        await read_nothing()
    async with db.reader.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM item"))).scalar() == 0
