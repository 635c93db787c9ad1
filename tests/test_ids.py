"""Identifiers: UUIDv7 that sort in the order they were made, even within one millisecond."""

from __future__ import annotations

import time
import uuid

from tenantry.core.ids import new_id


def test_ids_are_version_7_and_increase_within_a_millisecond() -> None:
    ids = [new_id() for _ in range(20_000)]  # many per millisecond

    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {7}
    assert {i.variant for i in ids} == {uuid.RFC_4122}


def test_an_id_carries_the_millisecond_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000

    assert before <= made.int >> 80 <= after + 1  # +1: a full millisecond may borrow the next
