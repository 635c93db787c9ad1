"""SQLite through aiosqlite in one trip to its thread per statement.

aiosqlite runs each SQLite connection on a thread of its own; every call crosses to that thread and
back (a queue, a future, a wake-up of the event loop), which costs tens of microseconds of the event
loop's time, far more than SQLite's own work for the statements of a request. SQLAlchemy's aiosqlite
adapter makes four such trips per statement: open a cursor, execute, fetch the rows, close the cursor.
This adapter does the four in one function sent to the connection's thread, and sends a transaction's
``BEGIN`` along with its first statement (a transaction that runs none ends without a trip), so a
sign-in's 21 trips become 6. Each trip also brings back whether a transaction is open, so a COMMIT or
ROLLBACK with nothing to end (the pool's reset after a read that committed) takes no trip either.
Everything else (the connection, its thread, errors, streaming results) is SQLAlchemy's adapter unchanged.

It relies on two internals of aiosqlite (``Connection._execute``, which runs a function on the
connection's thread, and ``Connection._conn``, the sqlite3 connection there); requirements.lock pins
the version, and ``tests/db/test_sqlite_driver.py`` fails if they change.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

# What one statement leaves behind: its result columns, its rows (when it has columns), lastrowid, rowcount,
# and whether a transaction is open after it.
_Outcome = tuple[Any, list[Any] | None, int | None, int, bool]


# A writer's page cache, in KiB (SQLite's default is 2 MiB). A batch of the background work (500 events fanned
# out with their audit entries, or a round of webhook results) dirties more pages than that: SQLite spilled
# them to the WAL before the commit and read them back: 8.7 pread and 7.8 pwrite calls per webhook delivery,
# against 2.5 and 3.9 with this cache (counted with strace). Only writers get it: a reader's cache
# is dropped whenever another connection commits, which under load is every few milliseconds.
WRITER_CACHE_KIB = 64 * 1024

# What SQLAlchemy issues to open a transaction (see tenantry.db.engine): held back until a statement follows.
_BEGINS = frozenset({"BEGIN", "BEGIN IMMEDIATE"})


def execute_in_thread(
    connection: sqlite3.Connection, begin: str | None, operation: str, parameters: Any, many: bool = False
) -> _Outcome:
    """On the connection's thread: the whole statement (or, with ``many``, one statement for each set of
    parameters), from opening a cursor to closing it, after the ``BEGIN`` held back for it."""
    cursor = connection.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.lastrowid, cursor.rowcount, connection.in_transaction
    finally:
        cursor.close()


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        adapted: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        if not parameters and operation in _BEGINS:
            adapted.hold_begin(operation)
            self.description, self.lastrowid, self.rowcount = None, -1, -1
            return
        self._keep(adapted.trip(operation, parameters))

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        adapted: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        self._keep(adapted.trip(operation, seq_of_parameters, many=True))

    def _keep(self, outcome: _Outcome) -> None:
        description, rows, lastrowid, rowcount, _ = outcome
        self.description = description
        if description:
            self._rows = deque(rows or ())
            self.lastrowid = self.rowcount = -1
        else:
            self.lastrowid, self.rowcount = lastrowid, rowcount  # type: ignore[assignment]


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("_begin", "_open")

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._begin: str | None = None  # a BEGIN not sent yet: it goes with the next statement
        # Whether a transaction may be open on the connection (as its thread last said; True when unknown).
        self._open = True

    def trip(self, operation: str, parameters: Any, *, many: bool = False) -> _Outcome:
        """Run one statement on the connection's thread, in one trip, with the ``BEGIN`` held back for it."""
        begin, self._begin = self._begin, None
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        try:
            running = connection._execute(execute_in_thread, connection._conn, begin, operation, parameters, many)  # type: ignore[no-untyped-call]
            outcome: _Outcome = self.await_(running)
        except Exception as error:
            self._open = True  # the BEGIN may have gone through before the statement failed
            self._handle_exception(error)
        self._open = outcome[4]
        return outcome

    def hold_begin(self, begin: str) -> None:
        """Open a transaction with ``begin``, sent along with its first statement (none: no trip at all)."""
        self._begin = begin

    def cursor(self, server_side: bool = False) -> AsyncAdapt_aiosqlite_cursor:
        if not server_side:
            return _Cursor(self)
        # A server-side cursor (a streamed result) keeps SQLAlchemy's own, which fetches as it goes: the
        # transaction it reads in must have begun.
        if self._begin is not None:
            begin, self._begin = self._begin, None
            self.trip(begin, None)
        self._open = True  # its statements run without a word to this adapter
        return super().cursor(server_side)

    def commit(self) -> None:
        if self._begin is None and self._open:
            super().commit()
        self._begin, self._open = None, False  # a transaction that ran nothing, or none: nothing to end

    def rollback(self) -> None:
        if self._begin is None and self._open:
            super().rollback()
        self._begin, self._open = None, False


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module to hand ``create_async_engine(..., module=...)`` for a ``sqlite+aiosqlite`` URL."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)
