"""JSON columns go through orjson (the engine's serializer), and read back what the json module wrote."""

from __future__ import annotations

import math

from sqlalchemy import select, text

from tenantry.core.clock import utcnow
from tenantry.core.ids import new_id
from tenantry.db.engine import Database, dump_json, load_json
from tenantry.events.models import OutboxEvent


def test_keys_that_are_not_strings_are_written_as_strings_as_the_json_module_writes_them() -> None:
    assert load_json(dump_json({1: "one", "nested": {2: [True, None]}})) == {"1": "one", "nested": {"2": [True, None]}}


def test_what_only_the_json_module_writes_is_still_read_exactly() -> None:
    assert math.isnan(load_json('{"x": NaN}')["x"])
    assert load_json('{"big": 123456789012345678901234567890}') == {"big": 123456789012345678901234567890}


async def test_a_json_column_round_trips_through_the_database(db: Database) -> None:
    data = {"team": {"id": str(new_id()), "name": 'Ünïcode "quoted" \u2028'}, "n": [1, 2.5, None], 7: "seven"}
    async with db.transaction() as tx:
        event = OutboxEvent(event_id=new_id(), type="team.created", data=data, occurred_at=utcnow())
        tx.add(event)
    async with db.read() as session:
        stored = (await session.scalars(select(OutboxEvent).where(OutboxEvent.event_id == event.event_id))).one()
        raw = (await session.execute(text("SELECT data FROM events_outbox WHERE id = :id"), {"id": stored.id})).scalar()
    assert stored.data == {**{k: v for k, v in data.items() if k != 7}, "7": "seven"}
    assert '"7":"seven"' in (raw if isinstance(raw, str) else dump_json(raw)).replace(" ", "")


def test_an_integer_beyond_64_bits_is_written_and_read_exactly() -> None:
    huge = {"n": 2**70, "negative": -(2**65)}
    assert load_json(dump_json(huge)) == huge


def test_integers_just_beyond_64_bits_are_read_exactly_not_as_floats() -> None:
    # 19 digits below -2**63, 20 digits above 2**64 - 1: orjson would make floats of both.
    for number in (-(2**63) - 1, 2**64, -(2**63), 2**64 - 1):
        read = load_json(dump_json({"n": number}))["n"]
        assert read == number
        assert type(read) is int
