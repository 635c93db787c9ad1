"""Hot statements run without SQLAlchemy's execution machinery: those of every sign-in and every event.

Through SQLAlchemy's asyncio layer a small statement costs the event loop about 0.25 to 0.45 ms on a slow
2-core machine (a greenlet, an execution context, a result object), and a connection's checkout and
return about 0.2 ms more; SQLite's own work for it is a few microseconds, and the trip to its thread about
20 µs. A :class:`Statement` keeps the statement SQLAlchemy Core (the same tables, the same SQL, compiled
once per dialect) and does the rest itself: each parameter made driver-ready, and each column of a result
read back, by the very functions SQLAlchemy's types use (or, for the writes, by the plain functions of
``converter``, checked against SQLAlchemy's own writes column by column in ``tests/db``).

A statement runs on any :data:`Lane`: a connection of the database's own (:class:`tenantry.db.direct.Direct`,
SQLite through aiosqlite, one trip to its thread per statement), or an SQLAlchemy session or connection
already in a transaction (PostgreSQL, and callers that need the ORM in the same transaction), where the
same SQL goes through ``exec_driver_sql``.

Parameters are tuples in the order of the ``keys`` given: the statement's bind parameter names (for an
``insert(table)``, its column names).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Uuid, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.types import TypeEngine

from tenantry.db.base import UTCDateTime
from tenantry.db.direct import Direct
from tenantry.db.engine import dump_json

Convert = Callable[[Any], Any]

# What a hot statement may run on: the database's own connection, or SQLAlchemy's in a transaction.
Lane = Direct | AsyncSession | AsyncConnection


def _sqlite_datetime(value: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DATETIME storage format, in UTC and without a zone (what UTCDateTime writes):
    # the aware value's ISO form less its "+00:00" (datetime.replace costs more than the whole format).
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTCDateTime column")
    return value.astimezone(UTC)


def _uuid_hex(value: uuid.UUID | None) -> str | None:
    return None if value is None else f"{value.int:032x}"  # UUID.hex's own format, without its property's call


def _json(value: Any) -> str:
    # None too is written as JSON's null, as SQLAlchemy's JSON type does by default (none_as_null=False);
    # written as the engine's serializer writes it.
    return dump_json(value)


def _bool_int(value: bool | None) -> int | None:
    return None if value is None else int(value)


def converter(type_: TypeEngine[Any], dialect: Dialect) -> Convert | None:
    """The function that makes a value of ``type_`` driver-ready on ``dialect`` (None: as it is)."""
    sqlite = dialect.name == "sqlite"
    if isinstance(type_, UTCDateTime):
        return _sqlite_datetime if sqlite else _utc
    if isinstance(type_, Uuid):
        return _uuid_hex if sqlite else None
    if isinstance(type_, JSON):
        return _json
    if isinstance(type_, Boolean):
        return _bool_int if sqlite else None
    return None


class _Constant:
    """A value written into the statement itself, the same for every execution."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Compiled:
    """A statement compiled for one dialect: its SQL, how to make its parameters, how to read its rows."""

    def __init__(self, statement: ClauseElement, keys: Sequence[str], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        names = compiled.positiontup
        if names is None:  # every dialect Tenantry runs on takes positional parameters
            raise TypeError(f"{dialect.name}: a hot statement needs a positional paramstyle")
        index = {key: number for number, key in enumerate(keys)}
        missing = [name for name in names if name not in index and compiled.binds[name].required]
        # A column default of Python's (``default=utcnow``) is computed by SQLAlchemy's execution, not here.
        missing += [column.key for column in (*compiled.insert_prefetch, *compiled.update_prefetch)]
        if missing:
            raise KeyError(f"statement parameters without a value: {missing}")
        self.sql = compiled.string
        # (where in a row, how to convert); a value written into the statement (``.values(locked_by=None)``)
        # is taken from there, the same every time.
        self.steps: list[tuple[int, Convert | _Constant | None]] = []
        for name in names:
            convert = converter(compiled.binds[name].type, dialect)
            if name in index:
                self.steps.append((index[name], convert))
            else:
                value = compiled.binds[name].effective_value
                self.steps.append((0, _Constant(convert(value) if convert else value)))
        self.is_identity = self.steps == [(number, None) for number in range(len(keys))]
        # How each result column is read: the type's own result processor on this dialect, as SQLAlchemy reads it.
        columns = getattr(statement, "exported_columns", ())
        self.readers: list[Convert | None] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]
        self.reads_as_is = not any(self.readers)

    def parameter(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """The driver's parameters for one execution."""
        if self.is_identity:
            return tuple(values)
        return tuple(
            convert.value if isinstance(convert, _Constant) else (values[i] if convert is None else convert(values[i]))
            for i, convert in self.steps
        )

    def parameters(self, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """The driver's parameters for one execution per row."""
        if self.is_identity:
            return [tuple(row) for row in rows]
        if not rows:
            return []
        # Rows of one batch often share a timestamp (a fan-out's "now"): each is formatted once.
        formatted: dict[datetime, str | None] = {}

        def timestamp(value: datetime | None) -> str | None:
            if value is None:
                return None
            found = formatted.get(value)
            if found is None:
                found = formatted[value] = _sqlite_datetime(value)
            return found

        # Column by column: the rows transposed, each column converted by ``map``, transposed back. Only the
        # converters run in Python, not a loop over every cell.
        columns = list(zip(*rows, strict=True))
        converted: list[Iterable[Any]] = []
        for i, convert in self.steps:
            if isinstance(convert, _Constant):
                converted.append(itertools.repeat(convert.value, len(rows)))
            elif convert is None:
                converted.append(columns[i])
            else:
                converted.append(map(timestamp if convert is _sqlite_datetime else convert, columns[i]))
        return list(zip(*converted, strict=True))

    def read(self, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """The driver's rows as SQLAlchemy would give them."""
        if self.reads_as_is:
            return [tuple(row) for row in rows]
        if not rows:
            return []
        # Column by column, as ``parameters`` converts: a batch of outbox events (ten columns, four read by a
        # function) read a cell at a time cost about a microsecond more per row, in a generator's steps.
        columns = zip(self.readers, zip(*rows, strict=True), strict=True)
        read = (column if reader is None else map(reader, column) for reader, column in columns)
        return list(zip(*read, strict=True))


async def _execute(tx: Lane, sql: str, parameters: Any, *, many: bool = False) -> tuple[list[Any] | None, int]:
    """Run ``sql`` on ``tx``: its rows (None for a statement without a result) and its row count."""
    if isinstance(tx, Direct):
        return await tx.execute(sql, parameters, many=many)
    connection = tx if isinstance(tx, AsyncConnection) else await tx.connection()
    result = await connection.exec_driver_sql(sql, parameters)
    if result.returns_rows:
        return list(result.all()), int(result.rowcount)
    return None, int(result.rowcount)


class Statement:
    """A Core statement, compiled once per dialect, run on any :data:`Lane`.

    ``statement`` is the statement, or makes it for a dialect (a dialect's own insert, for
    ``ON CONFLICT``); ``keys`` names its parameters, in the order they are given; ``row`` makes each result
    row (a named tuple's ``_make``, say) from the values read.
    """

    def __init__(
        self,
        statement: ClauseElement | Callable[[Dialect], ClauseElement],
        keys: Sequence[str] = (),
        *,
        row: Callable[[Iterable[Any]], Any] = tuple,
    ) -> None:
        self.build = statement if callable(statement) else lambda _: statement
        self.keys = tuple(keys)
        self.row = row
        self._compiled: dict[str, Compiled] = {}

    def compiled(self, dialect: Dialect) -> Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = Compiled(self.build(dialect), self.keys, dialect)
        return found

    async def rows(self, tx: Lane, *values: Any) -> list[Any]:
        """Every row the statement gives for ``values``."""
        compiled = self.compiled(_dialect(tx))
        rows, _ = await _execute(tx, compiled.sql, compiled.parameter(values))
        make = self.row
        return [make(row) for row in compiled.read(rows or ())]

    async def first(self, tx: Lane, *values: Any) -> Any | None:
        """The first row the statement gives for ``values``, or None."""
        found = await self.rows(tx, *values)
        return found[0] if found else None

    async def scalar(self, tx: Lane, *values: Any) -> Any | None:
        """The first column of the first row, or None."""
        found = await self.rows(tx, *values)
        return found[0][0] if found else None

    async def run(self, tx: Lane, *values: Any) -> int:
        """Run the statement for ``values``; the number of rows it changed."""
        compiled = self.compiled(_dialect(tx))
        _, count = await _execute(tx, compiled.sql, compiled.parameter(values))
        return count

    async def many(self, tx: Lane, rows: Sequence[Sequence[Any]]) -> int:
        """Run the statement once per row, in one driver call; the number of rows it changed, or -1 where the
        driver does not say (asyncpg's ``executemany``)."""
        if not rows:
            return 0
        compiled = self.compiled(_dialect(tx))
        _, count = await _execute(tx, compiled.sql, compiled.parameters(rows), many=True)
        return count


def _dialect(tx: Lane) -> Dialect:
    if isinstance(tx, AsyncSession):
        return tx.get_bind().dialect
    return tx.dialect


# The lengths a Listing is compiled for: a list is padded up to the next.
_LENGTHS = (1, 4, 16, 64, 256, 1024)


class Listing:
    """A statement with one ``IN (…)`` list of any length, run as a :class:`Statement`.

    ``build`` makes the statement from the list's bind parameters, of ``type_``. It is compiled for a few
    lengths only (1, 4, 16, 64, 256, 1024), the list padded up to the next by repeating its last value (``IN``
    ignores repeats): a handful of compiled statements rather than one per length, and no SQL written from
    values. A longer list is run in parts of 1024, their rows put together (so ``build`` must not cut its
    result short with a limit).
    ``keys`` names the statement's other parameters, given after the list.
    """

    def __init__(
        self,
        build: Callable[[list[Any]], ClauseElement],
        type_: TypeEngine[Any],
        keys: Sequence[str] = (),
        *,
        row: Callable[[Iterable[Any]], Any] = tuple,
    ) -> None:
        self._statements = {
            length: Statement(
                build([_item(i, type_) for i in range(length)]), (*(f"item_{i}" for i in range(length)), *keys), row=row
            )
            for length in _LENGTHS
        }

    def _parts(self, items: Sequence[Any]) -> Iterable[tuple[Statement, tuple[Any, ...]]]:
        for start in range(0, len(items), _LENGTHS[-1]):
            part = tuple(items[start : start + _LENGTHS[-1]])
            length = next(length for length in _LENGTHS if length >= len(part))
            yield self._statements[length], part + (part[-1],) * (length - len(part))

    async def rows(self, tx: Lane, items: Sequence[Any], *values: Any) -> list[Any]:
        """Every row the statement gives for ``items`` (none for no items)."""
        found: list[Any] = []
        for statement, part in self._parts(items):
            found += await statement.rows(tx, *part, *values)
        return found

    async def run(self, tx: Lane, items: Sequence[Any], *values: Any) -> int:
        """Run the statement for ``items``; the number of rows it changed."""
        count = 0
        for statement, part in self._parts(items):
            count += await statement.run(tx, *part, *values)
        return count


def _item(number: int, type_: TypeEngine[Any]) -> Any:
    return bindparam(f"item_{number}", type_=type_)
