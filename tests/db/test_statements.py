"""Hot statements write and read exactly what SQLAlchemy does, on the database's own connections (SQLite) and on
SQLAlchemy's (both backends); a direct transaction commits whole or not at all, and takes its turn with SQLAlchemy's."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from tenantry.db.direct import Direct
from tenantry.db.engine import Database
from tenantry.db.statements import Listing, Statement
from tenantry.tenancy.models import Organization

TABLE = Organization.__table__
COLUMNS = ("id", "name", "slug", "require_mfa", "allowed_email_domains", "created_at", "updated_at")
INSERT = Statement(insert(TABLE), COLUMNS)  # type: ignore[arg-type]
BY_SLUG = Statement(select(*(TABLE.c[name] for name in COLUMNS)).where(TABLE.c.slug == bindparam("slug")), ("slug",))
RENAME = Statement(
    update(TABLE).where(TABLE.c.id == bindparam("b_id")).values(name=bindparam("b_name")), ("b_id", "b_name")
)
AT = datetime(2026, 11, 28, 9, 30, 1, 123456, tzinfo=UTC)


def _org(slug: str, *, at: datetime = AT, domains: list[str] | None = None) -> tuple[Any, ...]:
    return (uuid.uuid4(), f"Org {slug} 'quoted'", slug, True, domains, at, at)


async def _through_orm(db: Database, slug: str) -> tuple[Any, ...]:
    async with db.read() as tx:
        org = (await tx.scalars(select(Organization).where(Organization.slug == slug))).one()
    return tuple(getattr(org, name) for name in COLUMNS)


@pytest.mark.parametrize("at", [AT, datetime(2026, 11, 28, 11, 30, 1, tzinfo=timezone(timedelta(hours=2)))])
async def test_a_row_written_and_read_by_statements_is_what_sqlalchemy_writes_and_reads(
    db: Database, at: datetime
) -> None:
    ours = _org("ours", at=at, domains=["example.com", "ünïcode.example"])
    async with db.direct() as tx:
        assert await INSERT.run(tx, *ours) == 1
    async with db.transaction() as session:  # SQLAlchemy's own write, for comparison
        await session.execute(insert(TABLE), dict(zip(COLUMNS, _org("theirs", at=at), strict=True)))

    orm = await _through_orm(db, "ours")
    assert orm == ours
    async with db.direct_read() as reader:
        read = await BY_SLUG.first(reader, "ours")
        theirs = await BY_SLUG.first(reader, "theirs")
    assert read == orm
    assert read[5].tzinfo is not None
    assert read[5] == at
    assert isinstance(read[0], uuid.UUID)
    assert type(read[0]) is type(orm[0])
    assert theirs is not None
    assert (theirs[1], theirs[2], theirs[5]) == ("Org theirs 'quoted'", "theirs", at)
    async with db.read() as session:  # the same statement on an SQLAlchemy session reads the same
        assert await BY_SLUG.first(session, "ours") == orm


ALL_BY_NAME = Statement(select(*(TABLE.c[name] for name in COLUMNS)).order_by(TABLE.c.slug))


async def test_many_rows_are_read_column_by_column_each_as_sqlalchemy_reads_it(db: Database) -> None:
    """Rows are converted a column at a time: each value must still land in its own row and column, Nones too."""
    rows = [
        _org(f"org-{n}", at=AT + timedelta(seconds=n), domains=None if n % 2 else [f"d{n}.example"]) for n in range(5)
    ]
    async with db.direct() as tx:
        for row in rows:
            await INSERT.run(tx, *row)
    async with db.direct_read() as reader:
        read = await ALL_BY_NAME.rows(reader)
    assert read == [await _through_orm(db, row[2]) for row in rows]
    assert read == rows
    async with db.direct_read() as reader:
        assert await BY_SLUG.rows(reader, "nobody") == []


async def test_statements_run_in_an_sqlalchemy_transaction_too(db: Database) -> None:
    org = _org("mixed")
    async with db.transaction() as session:
        await INSERT.run(session, *org)
        assert await RENAME.run(session, org[0], "Renamed") == 1
        assert await BY_SLUG.scalar(session, "mixed") == org[0]
    assert (await _through_orm(db, "mixed"))[1] == "Renamed"


async def _write(db: Database, *orgs: tuple[Any, ...], then_fail: bool = False) -> None:
    async with db.direct() as tx:
        for org in orgs:
            await INSERT.run(tx, *org)
        if then_fail:
            tx.info["webhooks.handed"] = ["a job of a transaction that rolled back"]
            raise RuntimeError("mid-way")


async def test_a_direct_transaction_that_fails_writes_nothing(db: Database) -> None:
    first = _org("first")
    with pytest.raises(IntegrityError):  # SQLAlchemy's error, whatever the connection
        await _write(db, first, _org("first"))  # the same slug twice: a unique key refuses the second
    async with db.direct_read() as reader:
        assert await BY_SLUG.first(reader, "first") is None

    with pytest.raises(RuntimeError, match="mid-way"):
        await _write(db, first, then_fail=True)
    async with db.direct() as tx:  # and the connection is fit for the next transaction
        await INSERT.run(tx, *first)
    assert (await _through_orm(db, "first"))[0] == first[0]


async def test_a_direct_transaction_hands_its_marks_to_the_commit_callbacks_only_once_committed(db: Database) -> None:
    seen: list[dict[str, Any]] = []
    db.on_commit(seen.append)
    with pytest.raises(RuntimeError):
        await _write(db, _org("never"), then_fail=True)
    assert seen == []
    async with db.direct() as tx:
        tx.info["newest_event"] = 7
        tx.info["webhooks.handed"] = ["a job"]  # any consumer's mark, not only the database's own
    async with db.direct():
        pass
    assert seen == [{"newest_event": 7, "webhooks.handed": ["a job"]}, {}]  # and the next one starts clean


async def test_writers_of_one_process_take_turns(db: Database) -> None:
    """On SQLite, a direct transaction waits for an SQLAlchemy one to end (and the other way round) instead of
    meeting its lock inside SQLite: both commit, one after the other. PostgreSQL takes writers side by side."""
    order: list[str] = []
    inside = asyncio.Event()

    async def through_sqlalchemy() -> None:
        async with db.transaction() as session:
            await INSERT.run(session, *_org("orm"))
            order.append("orm wrote")
            inside.set()
            await asyncio.sleep(0.2)
            order.append("orm commits")

    async def direct() -> None:
        await inside.wait()
        async with db.direct() as tx:
            order.append("direct began")
            await INSERT.run(tx, *_org("direct"))

    await asyncio.gather(through_sqlalchemy(), direct())
    turns = ["orm wrote", "orm commits", "direct began"]
    assert order == (turns if db.is_sqlite else ["orm wrote", "direct began", "orm commits"])
    async with db.direct_read() as reader:
        assert await BY_SLUG.first(reader, "orm") is not None
        assert await BY_SLUG.first(reader, "direct") is not None


async def test_an_sqlite_file_gets_connections_of_its_own_and_postgresql_sqlalchemys(db: Database) -> None:
    async with db.direct() as tx:
        assert isinstance(tx, Direct) == db.is_sqlite
    async with db.direct_read() as reader:
        assert isinstance(reader, Direct) == db.is_sqlite


@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 1500])
async def test_a_listing_finds_every_row_of_a_list_of_any_length(db: Database, count: int) -> None:
    orgs = [_org(f"org-{n}") for n in range(count + 2)]
    async with db.direct() as tx:
        for org in orgs:
            await INSERT.run(tx, *org)
    by_id = Listing(lambda ids: select(TABLE.c.slug).where(TABLE.c.id.in_(ids)), TABLE.c.id.type)
    rename = Listing(
        lambda ids: update(TABLE).where(TABLE.c.id.in_(ids)).values(name=bindparam("name")), TABLE.c.id.type, ("name",)
    )
    wanted = [org[0] for org in orgs[:count]]

    async with db.direct() as tx:
        assert await rename.run(tx, wanted, "Renamed") == count
    async with db.direct_read() as reader:
        found = await by_id.rows(reader, wanted)

    assert sorted(row[0] for row in found) == sorted(org[2] for org in orgs[:count])
    async with db.read() as session:
        names = dict((await session.execute(select(TABLE.c.slug, TABLE.c.name))).tuples().all())
    assert [names[org[2]] == "Renamed" for org in orgs] == [n < count for n in range(count + 2)]


async def _cancel_mid_write(db: Database, *, times: int) -> None:
    """Cancel a direct transaction after its first write, ``times`` times in a row (the later ones while it rolls
    back); then write another row, and check that only the later one is stored."""
    started = asyncio.Event()

    async def cancelled() -> None:
        async with db.direct() as tx:
            await INSERT.run(tx, *_org("cancelled"))
            started.set()
            await asyncio.sleep(30)  # cancelled here, its row written but not committed

    task = asyncio.create_task(cancelled())
    await started.wait()
    for _ in range(times):
        task.cancel()
        await asyncio.sleep(0)  # (the task is rolling back now)
    with pytest.raises(asyncio.CancelledError):
        await task
    await _write(db, _org("after"))

    async with db.direct_read() as reader:
        assert await BY_SLUG.first(reader, "cancelled") is None
        assert await BY_SLUG.first(reader, "after") is not None


async def test_a_direct_transaction_cancelled_mid_way_writes_nothing_and_the_next_one_commits(db: Database) -> None:
    await _cancel_mid_write(db, times=1)


async def test_a_rollback_cut_short_leaves_the_writer_fit_for_the_next_transaction(db: Database) -> None:
    await _cancel_mid_write(db, times=2)


async def test_a_transaction_whose_connection_is_lost_raises_what_lost_it_and_the_next_one_starts_clean(
    db: Database,
) -> None:
    seen: list[dict[str, Any]] = []
    db.on_commit(seen.append)

    async def losing() -> None:
        async with db.core_transaction() as connection:
            connection.info["webhooks.handed"] = ["a job"]
            await connection.invalidate()  # as SQLAlchemy does when a statement is cut off
            raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError, match="connection lost"):  # not SQLAlchemy's complaint about the lost one
        await losing()
    async with db.core_transaction() as connection:
        assert "webhooks.handed" not in connection.info
    assert seen == [{}]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_statement_cancelled_on_the_server_ends_its_transaction_with_the_cancellation(db: Database) -> None:
    started = asyncio.Event()

    async def waiting() -> None:
        async with db.core_transaction() as connection:
            connection.info["webhooks.handed"] = ["a job"]
            started.set()
            await connection.execute(text("SELECT pg_sleep(30)"))

    task = asyncio.create_task(waiting())
    await started.wait()
    await asyncio.sleep(0.1)  # (the sleep is running on the server now)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # as a shutdown cancels a flush: it must end, not raise anew
        await task
    async with db.core_transaction() as connection:
        assert (await connection.execute(text("SELECT 1"))).scalar() == 1
