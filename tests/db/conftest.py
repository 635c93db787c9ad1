"""The database port on each backend, for the tests of its pieces (types, bulk writes, JSON)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tenantry.db.engine import Database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()
