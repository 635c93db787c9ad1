"""SQLite statements take one trip to the driver's thread each, and behave as through SQLAlchemy's own adapter."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError, OperationalError

from tenantry.db import migrate
from tenantry.db.direct import Direct
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
    assert trips == ["execute_in_thread", "rollback"]  # BEGIN with the SELECT, then the pool's reset (4 + 4 + 1 before)

    trips.clear()
    async with db.core_transaction() as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('one')"))
        await connection.execute(text("INSERT INTO item (name) VALUES ('two')"))
    # BEGIN IMMEDIATE with the first INSERT, the second, COMMIT
    assert trips == ["execute_in_thread", "execute_in_thread", "commit"]

    trips.clear()
    async with db.core_transaction():
        pass
    assert trips == []  # nothing ran: nothing to begin or end


async def test_a_transactions_begin_is_held_back_without_a_statement_of_its_own(db: Database) -> None:
    """SQLAlchemy sees the transaction's statements only: its BEGIN goes to the driver, for the first of them."""
    statements: list[str] = []

    def seen(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(db.writer.sync_engine, "before_cursor_execute", seen)
    async with db.core_transaction() as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('one')"))
    event.remove(db.writer.sync_engine, "before_cursor_execute", seen)
    assert statements == ["INSERT INTO item (name) VALUES ('one')"]
    async with db.reader.connect() as connection:  # and it was a transaction: committed, seen by a reader
        assert (await connection.execute(text("SELECT name FROM item"))).scalar() == "one"


async def test_ending_a_transaction_that_is_over_takes_no_trip(db: Database, trips: list[str]) -> None:
    """The pool resets a reader as it comes back: after a session that committed, there is nothing to roll back."""
    async with db.reader.connect():  # opened once (its setup takes trips of its own), then pooled
        pass
    async with db.read() as session:
        trips.clear()
        assert (await session.execute(text("SELECT count(*) FROM item"))).scalar() == 0
    assert trips == ["execute_in_thread", "commit"]  # no "rollback" after it (3 trips before)

    trips.clear()
    async with db.reader.connect() as connection:  # the same connection again: its transaction was ended
        assert (await connection.execute(text("SELECT count(*) FROM item"))).scalar() == 0
        await connection.commit()
        assert (await connection.execute(text("SELECT count(*) FROM item"))).scalar() == 0
    # the second read's transaction is ended
    assert trips == ["execute_in_thread", "commit", "execute_in_thread", "rollback"]


async def test_a_failed_statement_still_has_its_transaction_ended(db: Database, trips: list[str]) -> None:
    async with db.core_transaction() as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('one')"))
    trips.clear()
    with pytest.raises(IntegrityError):
        async with db.core_transaction() as connection:
            await connection.execute(text("INSERT INTO item (name) VALUES ('one')"))  # BEGIN went, the INSERT failed
    assert trips == ["execute_in_thread", "rollback"]
    async with db.core_transaction() as connection:  # nothing was left open: the writer can begin again
        await connection.execute(text("INSERT INTO item (name) VALUES ('two')"))


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


async def test_a_connection_opened_while_another_holds_a_lock_is_not_refused_and_the_file_goes_wal(
    tmp_path: Path,
) -> None:
    """The first connections to a database left in rollback-journal mode (as migrations could leave it)
    switch it to WAL; SQLite refuses the switch at once, busy timeout or not, while another connection holds
    a write lock, and a starting process opens several connections together (a serve's dispatcher died of
    "database is locked"). The connection is opened all the same, and the next one makes the switch."""
    path = tmp_path / "journal.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE item (id INTEGER PRIMARY KEY)")
    holder.execute("BEGIN IMMEDIATE")  # another connection's write lock
    fresh = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with fresh.reader.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM item"))).scalar_one() == 0
        holder.commit()
        async with fresh.writer.connect() as connection:
            assert (await connection.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
    finally:
        await fresh.dispose()
        holder.close()


async def test_migrations_leave_the_database_in_wal_mode(tmp_path: Path) -> None:
    """So that the connections of the first serve find nothing to switch; and migrated all the same."""
    path = tmp_path / "migrated.db"
    url = f"sqlite+aiosqlite:///{path}"
    migrate.upgrade(url)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert await migrate.current_revision(url) == migrate.head_revision()


def _wal_bytes(db: Database) -> int:
    path = Path(str(db.writer.url.database) + "-wal")
    return path.stat().st_size if path.exists() else 0


@pytest.mark.parametrize("writer", ["sqlalchemy", "direct"])
async def test_a_writers_large_batch_stays_in_its_cache_until_the_commit(db: Database, writer: str) -> None:
    """About 4 MiB of rows in one transaction, twice SQLite's default cache: with that default, SQLite spilled
    the dirty pages into the WAL before the commit and read them back (about 8 page reads and 8 page writes a
    webhook delivery). A writer's cache holds such a batch; the rows are all there after the commit."""
    rows = [{"id": n, "name": f"{n:08d}" + "x" * 1000} for n in range(4000)]
    insert = text("INSERT INTO item (id, name) VALUES (:id, :name)")
    before = _wal_bytes(db)
    if writer == "sqlalchemy":
        async with db.writer.begin() as connection:
            await connection.execute(insert, rows)
            during = _wal_bytes(db)
    else:
        async with db.direct() as tx:
            assert isinstance(tx, Direct)
            await tx.execute(
                "INSERT INTO item (id, name) VALUES (?, ?)", [(r["id"], r["name"]) for r in rows], many=True
            )
            during = _wal_bytes(db)

    assert during == before  # nothing written to the WAL before the commit
    assert _wal_bytes(db) > before + 4_000_000
    async with db.reader.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM item"))).scalar_one() == 4000


async def test_readers_keep_sqlites_own_cache_size(db: Database) -> None:
    """A reader's cache is dropped whenever another connection commits: a large one would only cost memory."""
    async with db.reader.connect() as connection:
        assert (await connection.execute(text("PRAGMA cache_size"))).scalar_one() == -2000
    async with db.direct_read() as reader:
        assert isinstance(reader, Direct)
        rows, _ = await reader.execute("PRAGMA cache_size", None)
        assert rows == [(-2000,)]
