"""The SQL statements a database is asked to run, recorded while a block runs (for tests that count them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from tenantry.db.engine import Database

WRITER, READER = "writer", "reader"


@contextmanager
def recorded(
    db: Database,
    roles: Iterable[str] = (WRITER, READER),
    keep: Callable[[str, Any], bool] = lambda statement, parameters: True,
) -> Iterator[list[str]]:
    """The statements run within the block that ``keep(statement, parameters)`` accepts, by the parts of ``db``
    named in ``roles``: its writer (write transactions), its reader (reads), through SQLAlchemy's engines or on
    the database's own connections."""
    seen: list[str] = []
    roles = set(roles)

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if keep(statement, parameters):
            seen.append(statement)

    def watch(role: str, statement: str, parameters: Any) -> None:
        if role in roles:
            record(None, None, statement, parameters)

    engines = {WRITER: db.writer, READER: db.reader}
    listening = {engines[role].sync_engine for role in roles}
    for engine in listening:
        event.listen(engine, "before_cursor_execute", record)
    db.watchers.append(watch)
    try:
        yield seen
    finally:
        db.watchers.remove(watch)
        for engine in listening:
            event.remove(engine, "before_cursor_execute", record)
