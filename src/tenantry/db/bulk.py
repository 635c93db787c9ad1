"""Many rows in one driver call, for the few paths that write a row per event or per webhook delivery.

SQLAlchemy's ``executemany`` spends more on each row's parameters (a dict per row, then every
column's bind processor) than SQLite spends writing the row. A :class:`Bulk` keeps the statement
SQLAlchemy Core (the same tables, the same SQL, compiled once per dialect) and only does the
per-row conversion itself, with one plain function per column type that writes exactly what
SQLAlchemy's type would (``tests/db/test_bulk.py`` compares the two, column by column), then hands
the rows to the driver's ``executemany`` in one call.

Rows are tuples in the order of the ``keys`` given: the statement's bind parameter names (for an
``insert(table)``, its column names).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Uuid
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.types import TypeEngine

from tenantry.db.base import UTCDateTime
from tenantry.db.engine import Writer, dump_json

Convert = Callable[[Any], Any]


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
    return None if value is None else value.hex


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


class _Compiled:
    def __init__(self, statement: ClauseElement, keys: Sequence[str], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        names = compiled.positiontup
        if names is None:  # every dialect Tenantry runs on takes positional parameters
            raise TypeError(f"{dialect.name}: a bulk statement needs a positional paramstyle")
        index = {key: number for number, key in enumerate(keys)}
        missing = [name for name in names if name not in index and compiled.binds[name].required]
        if missing:
            raise KeyError(f"bulk statement parameters without a value: {missing}")
        self.sql = compiled.string
        # (where in a row, how to convert); a value written into the statement (``.values(locked_by=None)``)
        # is taken from there, the same for every row.
        self.steps: list[tuple[int, Convert | _Constant | None]] = []
        for name in names:
            convert = converter(compiled.binds[name].type, dialect)
            if name in index:
                self.steps.append((index[name], convert))
            else:
                value = compiled.binds[name].effective_value
                self.steps.append((0, _Constant(convert(value) if convert else value)))
        self.is_identity = self.steps == [(number, None) for number in range(len(keys))]

    def parameters(self, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
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


class _Constant:
    """A value written into the statement itself, the same for every row."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Bulk:
    """A Core statement run for many rows in one ``executemany``.

    ``statement`` is the statement, or makes it for a dialect (a dialect's own insert, for
    ``ON CONFLICT``); ``keys`` names the values of each row, in order.
    """

    def __init__(self, statement: ClauseElement | Callable[[Dialect], ClauseElement], keys: Sequence[str]) -> None:
        self.build = statement if callable(statement) else lambda _: statement
        self.keys = tuple(keys)
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = _Compiled(self.build(dialect), self.keys, dialect)
        return found

    async def run(self, tx: Writer, rows: Sequence[Sequence[Any]]) -> int:
        """Run the statement once per row, in one driver call; the number of rows it changed, or -1
        where the driver does not say (asyncpg's ``executemany``)."""
        if not rows:
            return 0
        connection = tx if isinstance(tx, AsyncConnection) else await tx.connection()
        compiled = self.compiled(connection.dialect)
        result = await connection.exec_driver_sql(compiled.sql, compiled.parameters(rows))
        return int(result.rowcount)
