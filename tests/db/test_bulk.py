"""Bulk writes store exactly what SQLAlchemy's own executemany stores, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from tenantry.db.bulk import Bulk
from tenantry.db.engine import Database
from tenantry.tenancy.models import Organization

TABLE = Organization.__table__
COLUMNS = ("id", "name", "slug", "require_mfa", "allowed_email_domains", "created_at", "updated_at")
PLUS_TWO = timezone(timedelta(hours=2))


def _row(number: int, *, at: datetime) -> tuple[Any, ...]:
    domains = (["example.com", "ünïcode.example"], [], None)[number % 3]
    return (uuid.uuid4(), f"Org {number} 'quoted'", f"org-{number}", number % 2 == 0, domains, at, at)


async def _stored(db: Database, ids: list[uuid.UUID]) -> list[tuple[Any, ...]]:
    """The rows as the driver returns them (no SQLAlchemy type processing), in ``ids`` order."""
    async with db.transaction() as tx:
        connection = await tx.connection()
        rows = (await connection.exec_driver_sql(f"SELECT {', '.join(COLUMNS)} FROM tenancy_organization")).all()  # noqa: S608
    by_id = {uuid.UUID(str(row[0])): tuple(row) for row in rows}
    return [by_id[i] for i in ids]


def _comparable(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # JSON text may differ in spacing between serializers: compare what it says, not how.
    values = list(row)
    values[4] = json.loads(values[4]) if isinstance(values[4], str) else values[4]  # (asyncpg: text already)
    return tuple(values[1:])  # the ids differ by construction


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 11, 27, 9, 30, 1, 123456, tzinfo=UTC),
        datetime(2026, 11, 27, 9, 30, 1, tzinfo=UTC),  # no microseconds: SQLite's text must still carry six digits
        datetime(2026, 11, 27, 11, 30, 1, 5, tzinfo=PLUS_TWO),  # another zone: stored in UTC
    ],
)
async def test_a_bulk_insert_stores_what_sqlalchemy_stores(db: Database, at: datetime) -> None:
    ours = [_row(n, at=at) for n in range(3)]
    theirs = [(uuid.uuid4(), *row[1:2], f"theirs-{n}", *row[3:]) for n, row in enumerate(ours)]
    bulk = Bulk(lambda _: insert(TABLE), COLUMNS)

    async with db.transaction() as tx:
        assert await bulk.run(tx, ours) in (3, -1)
        await tx.execute(insert(TABLE), [dict(zip(COLUMNS, row, strict=True)) for row in theirs])

    stored_ours = await _stored(db, [row[0] for row in ours])
    stored_theirs = await _stored(db, [row[0] for row in theirs])
    for mine, reference in zip(stored_ours, stored_theirs, strict=True):
        assert _comparable(mine)[0] == _comparable(reference)[0]
        assert _comparable(mine)[2:] == _comparable(reference)[2:]
    async with db.transaction() as tx:  # and read back through the ORM, the values are the ones written
        read = {org.id: org for org in await tx.scalars(select(Organization))}
    for row in ours:
        org = read[row[0]]
        assert (org.name, org.slug, org.require_mfa, org.allowed_email_domains) == row[1:5]
        assert org.created_at == at
        assert org.created_at.tzinfo is not None


async def test_a_naive_datetime_is_refused_as_sqlalchemy_refuses_it(db: Database) -> None:
    bulk = Bulk(lambda _: insert(TABLE), COLUMNS)
    naive = datetime(2026, 11, 27, 9, 30)  # the mistake under test

    with pytest.raises(ValueError, match="naive"):
        async with db.transaction() as tx:
            await bulk.run(tx, [_row(1, at=naive)])

    async with db.transaction() as tx:
        assert (await tx.scalars(select(Organization))).all() == []


def _insert_ignoring(dialect: Dialect) -> Any:
    module = postgresql if dialect.name == "postgresql" else sqlite
    return module.insert(TABLE).on_conflict_do_nothing()


async def test_updates_by_key_and_conflicts_ignored(db: Database) -> None:
    at = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    rows = [_row(n, at=at) for n in range(4)]
    insert_ignoring = Bulk(_insert_ignoring, COLUMNS)
    rename = Bulk(
        update(TABLE).where(TABLE.c.id == bindparam("b_id")).values(name=bindparam("b_name"), require_mfa=True),
        ("b_id", "b_name"),
    )
    async with db.transaction() as tx:
        await insert_ignoring.run(tx, rows[:2])
    async with db.transaction() as tx:  # two already there (ignored), two new
        changed = await insert_ignoring.run(tx, rows)
        renamed = await rename.run(tx, [(rows[0][0], "Renamed"), (uuid.uuid4(), "Nobody")])

    assert changed in (2, -1)  # asyncpg's executemany does not count
    assert renamed in (1, -1)
    async with db.transaction() as tx:
        orgs = {org.id: org for org in await tx.scalars(select(Organization))}
    assert len(orgs) == 4
    assert (orgs[rows[0][0]].name, orgs[rows[0][0]].require_mfa) == ("Renamed", True)  # True: fixed in the statement
    assert (orgs[rows[1][0]].name, orgs[rows[1][0]].require_mfa) == (rows[1][1], rows[1][3])


def test_a_parameter_left_without_a_value_is_refused_before_anything_runs() -> None:
    statement = update(TABLE).where(TABLE.c.id == bindparam("b_id")).values(name=bindparam("b_name"))

    with pytest.raises(KeyError, match="b_name"):
        Bulk(statement, ("b_id",)).compiled(sqlite.dialect())


async def test_nothing_to_write_touches_nothing(db: Database) -> None:
    bulk = Bulk(lambda _: insert(TABLE), COLUMNS)
    async with db.transaction() as tx:
        assert await bulk.run(tx, []) == 0
        assert (await tx.execute(text("SELECT 1"))).scalar() == 1
