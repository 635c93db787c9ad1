"""Many rows in one driver call, for the few paths that write a row per event or per webhook delivery.

SQLAlchemy's ``executemany`` spends more on each row's parameters (a dict per row, then every
column's bind processor) than SQLite spends writing the row. A :class:`Bulk` keeps the statement
SQLAlchemy Core and converts the rows itself, column by column (see ``tenantry.db.statements``), then
hands them to the driver's ``executemany`` in one call.

Rows are tuples in the order of the ``keys`` given: the statement's bind parameter names (for an
``insert(table)``, its column names).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import ClauseElement

from tenantry.db.statements import Compiled, Lane, Statement


class Bulk:
    """A Core statement run for many rows in one ``executemany``.

    ``statement`` is the statement, or makes it for a dialect (a dialect's own insert, for
    ``ON CONFLICT``); ``keys`` names the values of each row, in order.
    """

    def __init__(self, statement: ClauseElement | Callable[[Dialect], ClauseElement], keys: Sequence[str]) -> None:
        self.statement = Statement(statement, keys)

    def compiled(self, dialect: Dialect) -> Compiled:
        return self.statement.compiled(dialect)

    async def run(self, tx: Lane, rows: Sequence[Sequence[Any]]) -> int:
        """Run the statement once per row, in one driver call; the number of rows it changed, or -1
        where the driver does not say (asyncpg's ``executemany``)."""
        return await self.statement.many(tx, rows)
