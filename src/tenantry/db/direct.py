"""Connections of the database's own to an SQLite file, for the hot statements (see tenantry.db.statements).

SQLAlchemy's asyncio layer costs the event loop a greenlet and an execution context per statement, and a
checkout and return of a pooled connection per transaction: together several times what SQLite and the trip
to its thread cost for a sign-in's statements. A :class:`Direct` is an aiosqlite connection opened with the
same settings as the engines' (busy timeout, WAL, ``synchronous=NORMAL``, foreign keys); each statement is
one trip to its thread (``tenantry.db.sqlite``'s, with a transaction's ``BEGIN`` sent along with its first
statement), and its errors are SQLAlchemy's (an ``IntegrityError`` is an ``IntegrityError``), so callers
cannot tell the two apart.

SQLite takes one writer at a time. The write transactions of this process, SQLAlchemy's and these alike,
take turns at the database's ``gate`` (see ``Database``), so none of them waits inside SQLite for another
of the same process; other processes wait on the busy timeout, as before.

A read on a :class:`Direct` reader runs without ``BEGIN``: each statement is its own snapshot, which is all
a read of one statement needs.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import structlog
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from tenantry.db.sqlite import WRITER_CACHE_KIB, execute_in_thread

log = structlog.get_logger(__name__)


# Told of every statement before it runs, with the part its connection plays ("writer" or "reader"): what
# SQLAlchemy's ``before_cursor_execute`` event is to an engine (tests count statements with it).
Watcher = Callable[[str, str, Any], None]


class Direct:
    """One aiosqlite connection, its statements one trip each. ``info`` holds what a transaction wrote (the
    marks of ``Database.on_commit``)."""

    def __init__(
        self, connection: aiosqlite.Connection, dialect: Dialect, *, role: str, watchers: list[Watcher]
    ) -> None:
        self.connection = connection
        self.dialect = dialect
        self.role = role
        self.info: dict[str, Any] = {}
        self._watchers = watchers
        self._begin: str | None = None  # a BEGIN not sent yet: it goes with the next statement
        self._open = False  # whether a transaction may be open (as the connection's thread last said)

    async def execute(self, sql: str, parameters: Any, *, many: bool = False) -> tuple[list[Any] | None, int]:
        """Run ``sql``: its rows (None for a statement without a result) and its row count."""
        for watch in self._watchers:
            watch(self.role, sql, parameters)
        begin, self._begin = self._begin, None
        connection = self.connection
        try:
            outcome = await connection._execute(execute_in_thread, connection._conn, begin, sql, parameters, many)  # type: ignore[no-untyped-call]
        except sqlite3.Error as error:
            self._open = True  # the BEGIN may have gone through before the statement failed
            raise DBAPIError.instance(sql, parameters, error, sqlite3.Error, dialect=self.dialect) from error
        description, rows, _, rowcount, self._open = outcome
        return (rows if description else None), rowcount

    def begin(self, statement: str) -> None:
        """Open a transaction with ``statement``, sent along with the first statement (none: no trip at all)."""
        self.info.clear()
        self._begin = statement

    async def end(self, *, commit: bool) -> None:
        """Commit or roll back the transaction, if one is open. A COMMIT refused (``SQLITE_BUSY``) leaves it
        open, to be rolled back."""
        self._begin = None
        if self._open:
            await self.execute("COMMIT" if commit else "ROLLBACK", None)


async def _open(path: Path, *, wal: Callable[[Any], None], cache_kib: int | None = None) -> aiosqlite.Connection:
    connection = await aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
    try:
        connection._conn.row_factory = None  # plain tuples, as the engines' connections give
        await connection.execute("PRAGMA busy_timeout=10000")
        await connection._execute(lambda: wal(connection._conn.cursor()))  # type: ignore[no-untyped-call]
        await connection.execute("PRAGMA synchronous=NORMAL")
        await connection.execute("PRAGMA foreign_keys=ON")
        if cache_kib is not None:
            await connection.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
    except BaseException:
        await connection.close()  # (its thread would outlive it)
        raise
    return connection


class DirectPool:
    """The database's own SQLite connections: one writer (its transactions taking turns at ``gate``) and a
    few readers, opened when first needed and kept."""

    def __init__(
        self,
        path: Path,
        dialect: Dialect,
        *,
        gate: asyncio.Lock,
        wal: Callable[[Any], None],
        watchers: list[Watcher],
        readers: int = 4,
    ) -> None:
        self.path = path
        self.dialect = dialect
        self.gate = gate
        self.watchers = watchers
        self._wal = wal
        self._writer: Direct | None = None
        self._idle: list[Direct] = []
        self._readers = asyncio.Semaphore(readers)
        self._opened: list[Direct] = []

    async def _connect(self, role: str) -> Direct:
        cache_kib = WRITER_CACHE_KIB if role == "writer" else None
        connection = await _open(self.path, wal=self._wal, cache_kib=cache_kib)
        direct = Direct(connection, self.dialect, role=role, watchers=self.watchers)
        self._opened.append(direct)
        return direct

    @asynccontextmanager
    async def transaction(self, on_commit: Callable[[dict[str, Any]], None]) -> AsyncIterator[Direct]:
        """A write transaction (``BEGIN IMMEDIATE``): committed when the block ends, rolled back if it raises;
        ``on_commit`` is handed what it wrote (``info``) after the commit."""
        async with self.gate:
            direct = self._writer
            if direct is None:
                direct = self._writer = await self._connect("writer")
            direct.begin("BEGIN IMMEDIATE")
            try:
                yield direct
            except BaseException:
                await _roll_back(self, direct)
                raise
            try:
                await direct.end(commit=True)
            except BaseException:
                await _roll_back(self, direct)
                raise
            info = dict(direct.info)
        on_commit(info)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Direct]:
        """A reader: each statement is its own snapshot (no transaction)."""
        async with self._readers:
            direct = self._idle.pop() if self._idle else await self._connect("reader")
            try:
                yield direct
            finally:
                self._idle.append(direct)

    async def discard(self, direct: Direct) -> None:
        """Close ``direct`` and forget it (the writer is opened anew when next needed)."""
        if self._writer is direct:
            self._writer = None
        if direct in self._opened:
            self._opened.remove(direct)
        await direct.connection.close()

    async def close(self) -> None:
        opened, self._opened, self._idle, self._writer = self._opened, [], [], None
        for direct in opened:
            await direct.connection.close()


async def _roll_back(pool: DirectPool, direct: Direct) -> None:
    try:
        await direct.end(commit=False)
    except Exception:  # the first error stands; a connection whose state is unknown is not used again
        log.warning("db.rollback_failed", exc_info=True)
        await pool.discard(direct)
