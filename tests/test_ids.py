"""Identifiers: UUIDv7 that sort in the order they were made, even within one millisecond."""

from __future__ import annotations

import os
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


def test_a_forked_child_never_draws_its_parents_random_bytes() -> None:
    """Random bytes are drawn from the OS in blocks: a child forked with a block in hand must not use it too,
    or parent and child would make the same ids in the same millisecond."""
    new_id()  # the parent now holds a block, most of it unused
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids' random parts, to the parent
        os.close(read)
        os.write(write, b"".join(new_id().bytes[6:] for _ in range(50)))
        os._exit(0)
    os.close(write)
    theirs = b""
    while chunk := os.read(read, 4096):
        theirs += chunk
    os.waitpid(pid, 0)
    os.close(read)
    ours = b"".join(new_id().bytes[6:] for _ in range(50))

    child = {theirs[i : i + 10] for i in range(0, len(theirs), 10)}
    parent = {ours[i : i + 10] for i in range(0, len(ours), 10)}
    assert len(child) == 50
    assert not child & parent
