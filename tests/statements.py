"""The SQL statements an engine is asked to run, recorded while a block runs (for tests that count them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


@contextmanager
def recorded(
    engines: Iterable[AsyncEngine], keep: Callable[[str, Any], bool] = lambda statement, parameters: True
) -> Iterator[list[str]]:
    """The statements run on any of ``engines`` within the block that ``keep(statement, parameters)`` accepts."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if keep(statement, parameters):
            seen.append(statement)

    listening = {engine.sync_engine for engine in engines}
    for engine in listening:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in listening:
            event.remove(engine, "before_cursor_execute", record)
