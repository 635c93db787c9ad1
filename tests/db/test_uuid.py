"""Ids read back from the database are the UUIDs written, however they were written."""

from __future__ import annotations

import pickle
import uuid

import pytest
from sqlalchemy import insert as sa_insert
from sqlalchemy import select, text

from tenantry.core.clock import utcnow
from tenantry.core.ids import new_id
from tenantry.db.base import _uuid_from_hex
from tenantry.db.bulk import Bulk
from tenantry.db.engine import Database
from tenantry.events.models import OutboxEvent


def test_a_uuid_made_from_hex_digits_is_the_uuid_in_every_respect() -> None:
    for made in (uuid.uuid4(), new_id(), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)):
        read = _uuid_from_hex(made.hex)
        assert read == made
        assert type(read) is uuid.UUID
        assert hash(read) == hash(made)
        assert (str(read), read.version, read.variant) == (str(made), made.version, made.variant)
        assert read.is_safe == made.is_safe
        assert pickle.loads(pickle.dumps(read)) == made  # noqa: S301 (our own bytes)
        assert {made: "found"}[read] == "found"
    assert _uuid_from_hex(None) is None


def test_text_not_in_the_stored_form_gets_uuids_own_strict_parsing() -> None:
    made = uuid.uuid4()
    assert _uuid_from_hex(str(made)) == made  # with hyphens
    assert _uuid_from_hex("{" + str(made) + "}") == made
    with pytest.raises(ValueError, match="badly formed"):
        _uuid_from_hex("not a uuid")


async def test_ids_written_by_the_orm_and_by_bulk_writes_read_back_equal(db: Database) -> None:
    by_orm, by_bulk, org = new_id(), new_id(), uuid.uuid4()
    async with db.transaction() as tx:
        tx.add(OutboxEvent(event_id=by_orm, type="team.created", org_id=org, data={}, occurred_at=utcnow()))
    insert = Bulk(sa_insert(OutboxEvent.__table__), ("event_id", "type", "org_id", "data", "occurred_at"))
    async with db.core_transaction() as connection:
        await insert.run(connection, [(by_bulk, "team.created", None, {}, utcnow())])
    async with db.read() as session:
        rows = (await session.execute(select(OutboxEvent.event_id, OutboxEvent.org_id).order_by(OutboxEvent.id))).all()
        assert [tuple(row) for row in rows] == [(by_orm, org), (by_bulk, None)]
        assert all(isinstance(row.event_id, uuid.UUID) for row in rows)
        if db.is_sqlite:
            stored = (await session.execute(text("SELECT event_id FROM events_outbox ORDER BY id"))).scalars().all()
            assert stored == [by_orm.hex, by_bulk.hex]  # 32 hex digits: the form read fast
