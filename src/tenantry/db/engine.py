"""The database port: one object owning the engines and handing out transactions.

SQLite allows one writer at a time. Writes therefore go through a single pooled connection that
starts its transactions with ``BEGIN IMMEDIATE`` (no lock upgrade, hence no deadlock between two
writers; other processes wait on ``busy_timeout``), while reads use a pool of their own. On
PostgreSQL both roles share one pool.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import structlog
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from tenantry.db.direct import Direct, DirectPool, Watcher
from tenantry.db.sqlite import WRITER_CACHE_KIB, OneTripConnection, OneTripDBAPI

log = structlog.get_logger(__name__)

# What a service may write through: an ORM session, or a bare connection on hot paths.
Writer = AsyncSession | AsyncConnection


def dump_json(value: Any) -> str:
    """How JSON columns are written. Event data, audit entries and webhook payloads are written and read
    on the hot paths of the outbox and webhooks: orjson does it several times faster than the json module.
    Keys that are not strings are written as strings, as json.dumps does; what orjson cannot write (an
    integer beyond 64 bits) is written by the json module."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


# orjson reads an integer beyond 64 bits (below -2**63 or above 2**64 - 1) as a float, silently: text with
# a run of 19 digits or more goes to the json module. The run is found by turning every digit into "0" and
# looking for 19 of them: about a sixth of what a regular expression's search costs, on every read of event data.
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


def load_json(text: str) -> Any:
    """How JSON columns are read: by orjson, unless the text holds what only the json module reads
    exactly (an integer beyond 64 bits, NaN or Infinity)."""
    raw = text.encode()
    if _LONG_NUMBER not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def _engine(url: str, **options: Any) -> AsyncEngine:
    return create_async_engine(url, json_serializer=dump_json, json_deserializer=load_json, **options)


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def _switch_to_wal(cursor: Any) -> None:
    """Put the database file in WAL mode (readers beside the writer), for good: the file keeps it, and
    asking again once it is WAL changes nothing and takes no lock.

    The switch needs the file to itself, and SQLite refuses it at once, busy timeout or not, while another
    connection holds a lock; a starting process opens several connections together (every background task
    has its own), and the first serve after ``migrate`` found its dispatcher dead of "database is locked".
    A connection refused goes on in the mode the file is in: the switch another one is making applies to it
    from its next transaction, and the next connection opened tries again.
    """
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        log.info("db.wal_switch_deferred", reason=str(exc))


def _configure_sqlite(engine: AsyncEngine, *, begin: str, cache_kib: int | None = None) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN is ours to issue.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=10000")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        if cache_kib is not None:
            cursor.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        adapted = connection.connection.dbapi_connection
        if isinstance(adapted, OneTripConnection):
            adapted.hold_begin(begin)  # sent with the transaction's first statement, as it would be anyway
        else:
            connection.exec_driver_sql(begin)


def _configure_postgresql(engine: AsyncEngine, *, role: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Work as a role that owns no table, so row-level security applies to every query we make.
        cursor = dbapi_connection.cursor()
        cursor.execute(f'SET ROLE "{role}"')
        cursor.close()


class Database:
    """Engines for one database URL, and transactions on them.

    On PostgreSQL, ``role`` (when given) is the role every connection switches to: one without
    ownership of the tables, so that their row-level-security policies hold for the application.
    """

    def __init__(self, url: str, *, echo: bool = False, role: str | None = None) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # The turns of this process's write transactions on SQLite (see tenantry.db.direct).
        self.gate = asyncio.Lock()
        self._direct: DirectPool | None = None
        # Told of each statement run on the database's own connections (see tenantry.db.direct).
        self.watchers: list[Watcher] = []
        if self.is_sqlite:
            path = _sqlite_path(url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            # One trip to the driver's thread per statement rather than four (see tenantry.db.sqlite).
            aiosqlite = make_url(url).get_driver_name() == "aiosqlite"
            driver = {"module": OneTripDBAPI()} if aiosqlite else {}
            # Every write transaction ends in an explicit COMMIT or ROLLBACK, so the pool's own reset
            # on return would only cost another trip to the driver's thread.
            self.writer = _engine(
                url, echo=echo, pool_size=1, max_overflow=0, pool_timeout=30, pool_reset_on_return=None, **driver
            )
            # Readers are kept rather than opened and closed under load (each is a thread and four PRAGMAs).
            self.reader = _engine(url, echo=echo, pool_size=8, max_overflow=8, **driver)
            _configure_sqlite(self.writer, begin="BEGIN IMMEDIATE", cache_kib=WRITER_CACHE_KIB)
            _configure_sqlite(self.reader, begin="BEGIN")
            # Hot statements on connections of our own (with echo on, all go through SQLAlchemy, to be seen).
            if aiosqlite and path is not None and not echo:
                self._direct = DirectPool(
                    path, self.writer.dialect, gate=self.gate, wal=_switch_to_wal, watchers=self.watchers
                )
        else:
            self.writer = _engine(url, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=False)
            self.reader = self.writer
            if role:
                _configure_postgresql(self.writer, role=role)
        self._write_sessions = async_sessionmaker(self.writer, expire_on_commit=False, autoflush=False)
        self._read_sessions = async_sessionmaker(self.reader, expire_on_commit=False, autoflush=False)
        self._after_commit: list[Callable[[dict[str, Any]], None]] = []

    def on_commit(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(session.info)`` after every committed write transaction.

        Services leave marks in ``session.info`` (say, that events were written) so that a
        dispatcher can be woken at once instead of polling.
        """
        self._after_commit.append(callback)

    def _committed(self, info: dict[str, Any]) -> None:
        for callback in self._after_commit:
            callback(info)

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """This process's turn to write, where its writers could otherwise wait on each other inside SQLite."""
        if self._direct is None:
            yield
            return
        async with self.gate:
            yield

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        async with self._turn(), self._write_sessions() as session:
            async with session.begin():
                yield session
            info = dict(session.info)
        self._committed(info)

    @asynccontextmanager
    async def core_transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction on a bare connection, for hot paths that need no ORM unit of work.

        Same commit rules and after-commit callbacks as :meth:`transaction`.
        """
        async with self._turn(), self.writer.begin() as connection:
            # Marks belong to one transaction, but this dict to the pooled connection: every key the transaction
            # added is taken away as it ends, committed or not, and handed on if it committed. The dict is held
            # from the start: a connection lost mid-way can no longer be asked for it (SQLAlchemy would raise in
            # place of the error that lost it), and the pool clears it anyway when it reconnects.
            marks = connection.info
            kept = set(marks)
            try:
                yield connection
            finally:
                info = {key: marks.pop(key) for key in list(marks) if key not in kept}
        self._committed(info)

    @asynccontextmanager
    async def direct(self) -> AsyncIterator[Direct | AsyncConnection]:
        """A write transaction for hot statements (``tenantry.db.statements``): on the database's own
        connection where it has one (an SQLite file), else as :meth:`core_transaction`. Same commit rules
        and after-commit callbacks."""
        if self._direct is None:
            async with self.core_transaction() as connection:
                yield connection
            return
        async with self._direct.transaction(self._committed) as direct:
            yield direct

    @asynccontextmanager
    async def direct_read(self) -> AsyncIterator[Direct | AsyncConnection]:
        """A reader for hot statements: the database's own (each statement its own snapshot) where it has one,
        else a connection of the read pool (one transaction)."""
        if self._direct is None:
            async with self.reader.connect() as connection:
                yield connection
            return
        async with self._direct.read() as direct:
            yield direct

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction on the read pool."""
        async with self._read_sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        if self._direct is not None:
            await self._direct.close()
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()
