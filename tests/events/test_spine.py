"""The event spine: outbox atomicity, at-least-once dispatch without skipping late commits, durable jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.context import Actor
from tenantry.core.ids import new_id
from tenantry.db import scope
from tenantry.db.engine import Database
from tenantry.db.statements import Lane, Statement
from tenantry.events.dispatcher import Dispatcher, LeaseLost, _Commits
from tenantry.events.jobs import JobRunner, enqueue
from tenantry.events.models import ConsumerCursor, EventRow, Job, OutboxEvent
from tenantry.events.outbox import NEWEST_EVENT, emit
from tenantry.platform import Platform
from tenantry.tenancy.models import AuditEntry
from tests.factories.identity import signed_in
from tests.statements import READER, WRITER, recorded

EVENT = "user.updated"


async def _count(db: Database, model: type[Any]) -> int:
    async with db.read() as tx:
        return int(await tx.scalar(select(func.count()).select_from(model)) or 0)


async def test_an_event_commits_with_its_change_or_not_at_all(db: Database) -> None:
    async def failing_change() -> None:
        async with db.transaction() as tx:
            await emit(tx, EVENT, data={"n": 1})
            raise RuntimeError("the change failed after the event was written")

    with pytest.raises(RuntimeError):
        await failing_change()
    async with db.transaction() as tx:
        await emit(tx, EVENT, data={"n": 2})

    async with db.read() as tx:
        rows = (await tx.scalars(select(OutboxEvent))).all()
    assert [r.data for r in rows] == [{"n": 2}]


async def test_an_unknown_event_type_is_refused(db: Database) -> None:
    with pytest.raises(KeyError):
        async with db.transaction() as tx:
            await emit(tx, "no.such_event", data={})


class Recorder:
    def __init__(self) -> None:
        self.seen: list[int] = []
        self.handed = asyncio.Event()  # set once events have been handed over

    async def __call__(self, tx: AsyncSession, events: Sequence[EventRow]) -> None:
        self.seen += [e.data.get("n") for e in events]
        self.handed.set()


async def test_the_dispatcher_hands_every_event_over_in_order(db: Database) -> None:
    recorder = Recorder()
    dispatcher = Dispatcher(db, node_id="test", batch_size=7)
    dispatcher.register("recorder", recorder)
    async with db.transaction() as tx:
        for n in range(20):
            await emit(tx, EVENT, data={"n": n})

    await dispatcher.drain()
    await dispatcher.drain()

    assert recorder.seen == list(range(20))


async def test_consumers_are_handed_every_column_of_an_event_as_the_orm_reads_it(db: Database) -> None:
    """The dispatcher hands events over as named tuples read by column name: each field holds its own
    column's value, converted as the ORM converts it, and no column of the outbox is left out."""
    handed: list[Any] = []

    async def keep(_tx: AsyncSession, events: Sequence[EventRow]) -> None:
        handed.extend(events)

    dispatcher = Dispatcher(db, node_id="test")
    dispatcher.register("keeper", keep)
    actor = Actor(type="user", id="u-1", ip="192.0.2.7", user_agent="agent/1.0")
    async with db.transaction() as tx:
        await emit(tx, EVENT, data={"n": 1, "nested": {"list": [1, "two"]}}, actor=actor, org_id=new_id())

    await dispatcher.drain()

    async with db.read() as tx:
        stored = (await tx.scalars(select(OutboxEvent))).one()
    assert isinstance(handed[0], EventRow)
    assert set(EventRow._fields) == set(OutboxEvent.__table__.c.keys())
    assert handed[0]._asdict() == {name: getattr(stored, name) for name in EventRow._fields}


def _batch_read(statement: str, _parameters: Any) -> bool:
    return "FROM events_outbox" in statement and "ORDER BY" in statement


async def test_consumers_at_the_same_place_share_one_read_and_one_behind_reads_its_own(db: Database) -> None:
    first, second = Recorder(), Recorder()
    dispatcher = Dispatcher(db, node_id="test", batch_size=7)
    dispatcher.register("first", first)
    dispatcher.register("second", second)
    async with db.transaction() as tx:
        for n in range(20):
            await emit(tx, EVENT, data={"n": n})

    with recorded(db, [WRITER], _batch_read) as reads:
        await dispatcher.drain()

    assert first.seen == second.seen == list(range(20))
    assert len(reads) == 3  # batches of 7, 7 and 6, each read once for both (without sharing: 6)

    late = Recorder()  # a consumer that starts from the beginning while the others are at the end
    dispatcher.register("late", late)
    async with db.transaction() as tx:
        await emit(tx, EVENT, data={"n": 20})
    with recorded(db, [WRITER], _batch_read) as reads:
        await dispatcher.drain()

    assert first.seen == second.seen == list(range(21))
    assert late.seen == list(range(21))
    assert len(reads) == 4  # the others' one new event, shared; the late one's three batches, its own


async def test_a_restarted_dispatcher_resumes_where_it_stopped(db: Database) -> None:
    first, second = Recorder(), Recorder()
    async with db.transaction() as tx:
        for n in range(3):
            await emit(tx, EVENT, data={"n": n})
    one = Dispatcher(db, node_id="a", lease_seconds=0.01)
    one.register("recorder", first)
    await one.drain()
    async with db.transaction() as tx:
        await emit(tx, EVENT, data={"n": 3})
    await asyncio.sleep(0.05)  # the first process's lease lapses, as if it had died

    two = Dispatcher(db, node_id="b")
    two.register("recorder", second)
    await two.drain()

    assert first.seen == [0, 1, 2]
    assert second.seen == [3]


async def test_a_dispatcher_whose_start_failed_tries_again_rather_than_stopping_for_good(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first statement (making the consumers' cursors) may meet a database that is not ready (locked,
    restarting): it is retried at the next poll, like any pass, instead of ending the dispatcher's task and
    leaving every event of the process's life undispatched."""
    seen = Recorder()
    dispatcher = Dispatcher(db, node_id="starting", poll_interval=0.05)
    dispatcher.register("recorder", seen)
    ensure, failures = dispatcher._ensure_cursors, []

    async def failing_once() -> None:
        if not failures:
            failures.append(1)
            raise OperationalError("INSERT INTO consumer cursors", {}, Exception("database is locked"))
        await ensure()

    monkeypatch.setattr(dispatcher, "_ensure_cursors", failing_once)
    async with db.transaction() as tx:
        await emit(tx, EVENT, data={"n": 1})
    task = asyncio.create_task(dispatcher.run())
    try:
        async with asyncio.timeout(10):
            await seen.handed.wait()
    finally:
        dispatcher.request_stop()
        await task
    assert failures == [1]
    assert seen.seen == [1]


async def test_only_the_lease_holder_dispatches(db: Database) -> None:
    mine, theirs = Recorder(), Recorder()
    holder = Dispatcher(db, node_id="holder")
    holder.register("recorder", mine)
    other = Dispatcher(db, node_id="other")
    other.register("recorder", theirs)
    await holder.drain()
    async with db.transaction() as tx:
        await emit(tx, EVENT, data={"n": 1})

    await other.drain()
    await holder.drain()

    assert theirs.seen == []
    assert mine.seen == [1]


async def test_a_process_whose_lease_was_taken_while_it_stalled_commits_nothing_of_its_batch(db: Database) -> None:
    async def echo(tx: AsyncSession, events: Sequence[EventRow]) -> None:
        for event in events:
            if "n" in event.data:
                await emit(tx, EVENT, data={"echo": event.data["n"]})

    holder = Dispatcher(db, node_id="holder")
    holder.register("echo", echo)
    await holder.drain()  # holds the lease; renews it only once a third of it has passed
    # The holder stalls past its lease, and another process takes the consumer over.
    async with db.transaction() as tx:
        stale = utcnow() - timedelta(seconds=1)
        await tx.execute(update(ConsumerCursor).where(ConsumerCursor.name == "echo").values(lease_until=stale))
    other = Dispatcher(db, node_id="other")
    other.register("echo", Recorder())
    await other.drain()
    async with db.transaction() as tx:
        await emit(tx, EVENT, data={"n": 1})

    with pytest.raises(LeaseLost):
        await holder.run_once()  # it handles the event, then finds the consumer is not its own at the save

    assert await _count(db, OutboxEvent) == 1  # its handler's echo was rolled back with the save
    assert await holder.run_once() is False  # nor does it take the consumer back from the live holder
    async with db.read() as tx:
        assert await tx.scalar(select(ConsumerCursor.owner).where(ConsumerCursor.name == "echo")) == "other"


async def test_a_process_taking_a_consumer_back_resumes_where_the_other_left_it(db: Database) -> None:
    first, second = Recorder(), Recorder()
    one = Dispatcher(db, node_id="one", lease_seconds=0.01)
    one.register("recorder", first)
    two = Dispatcher(db, node_id="two", lease_seconds=0.01)
    two.register("recorder", second)
    async with db.transaction() as tx:
        await emit(tx, EVENT, data={"n": 1})
    await one.drain()
    async with db.transaction() as tx:
        await emit(tx, EVENT, data={"n": 2})
    await asyncio.sleep(0.05)  # the first process's lease lapses; the second takes the consumer, moves it on
    await two.drain()
    await asyncio.sleep(0.05)  # and lapses in turn

    await one.drain()  # the first takes the consumer back

    assert first.seen == [1]  # not 2 again: it starts from the stored cursor, not from what it had read
    assert second.seen == [2]


async def test_an_event_that_commits_late_is_not_skipped(database_url: str, db: Database) -> None:
    """On PostgreSQL a smaller id can commit after a larger one; the consumer must still get it."""
    recorder = Recorder()
    dispatcher = Dispatcher(db, node_id="test")
    dispatcher.register("recorder", recorder)
    await dispatcher.drain()
    if db.is_sqlite:
        # SQLite has one writer: ids are handed out in commit order, the gap cannot happen.
        async with db.transaction() as tx:
            await emit(tx, EVENT, data={"n": 1})
            await emit(tx, EVENT, data={"n": 2})
        await dispatcher.drain()
        assert recorder.seen == [1, 2]
        return

    slow = Database(database_url)
    try:
        late_started = asyncio.Event()
        release = asyncio.Event()

        async def late_writer() -> None:
            async with slow.transaction() as tx:
                await emit(tx, EVENT, data={"n": 1})  # takes the smaller id
                late_started.set()
                await release.wait()

        task = asyncio.create_task(late_writer())
        await late_started.wait()
        async with db.transaction() as tx:
            await emit(tx, EVENT, data={"n": 2})  # larger id, committed first
        await dispatcher.drain()
        assert recorder.seen == [2]

        release.set()
        await task
        await dispatcher.drain()
    finally:
        await slow.dispose()

    assert sorted(recorder.seen) == [1, 2]


# A row that breaks a constraint checked only at COMMIT: the transaction fails as it commits, on either database.
_FAILS_AT_COMMIT = {
    "sqlite": (
        "CREATE TEMP TABLE doomed_parent (id INTEGER PRIMARY KEY)",
        "CREATE TEMP TABLE doomed_child (parent INTEGER REFERENCES doomed_parent (id) DEFERRABLE INITIALLY DEFERRED)",
        "INSERT INTO doomed_child VALUES (1)",
    ),
    "postgresql": (
        "CREATE TEMP TABLE doomed (id INTEGER UNIQUE DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP",
        "INSERT INTO doomed VALUES (1), (1)",
    ),
}


class FailingCommit(Recorder):
    """A consumer whose first transaction fails as it commits (the database went away at that moment)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def __call__(self, tx: Lane, events: Sequence[EventRow]) -> None:
        await super().__call__(tx, events)
        if not self.failed:
            self.failed = True
            dialect = tx.get_bind().dialect if isinstance(tx, AsyncSession) else tx.dialect
            for sql in _FAILS_AT_COMMIT[dialect.name]:
                await Statement(text(sql)).run(tx)


async def test_events_of_a_transaction_that_failed_to_commit_are_handed_over_again(db: Database) -> None:
    recorder = FailingCommit()
    dispatcher = Dispatcher(db, node_id="test")
    dispatcher.register("recorder", recorder)
    async with db.transaction() as tx:
        for n in range(3):
            await emit(tx, EVENT, data={"n": n})

    with pytest.raises(IntegrityError):
        await dispatcher.drain()
    await dispatcher.drain()

    assert recorder.seen == [0, 1, 2, 0, 1, 2]  # rolled back, so handed over again: none skipped


def _cursor_update(statement: str, _parameters: Any) -> bool:
    return statement.lstrip().upper().startswith("UPDATE EVENTS_CONSUMER")


async def test_consumers_at_the_same_place_are_handed_a_batch_in_one_transaction(db: Database) -> None:
    first, second = Recorder(), Recorder()
    dispatcher = Dispatcher(db, node_id="test")
    dispatcher.register("first", first)
    dispatcher.register("second", second)
    await dispatcher.drain()  # both take their lease
    async with db.transaction() as tx:
        for n in range(3):
            await emit(tx, EVENT, data={"n": n})

    with recorded(db, [WRITER], _cursor_update) as updates, recorded(db, [WRITER], _batch_read) as reads:
        assert await dispatcher.run_once() is True

    assert first.seen == second.seen == [0, 1, 2]
    assert len(reads) == 1
    assert len(updates) == 1  # both cursors moved by one statement (one each when stepped apart)
    async with db.read() as tx:
        positions = dict((await tx.execute(select(ConsumerCursor.name, ConsumerCursor.position))).tuples().all())
    async with db.read() as tx:
        newest = await tx.scalar(select(func.max(OutboxEvent.id)))
    assert positions == {"first": newest, "second": newest}


def _newest_read(statement: str, _parameters: Any) -> bool:
    return "max(events_outbox.id)" in statement


async def test_a_pass_after_this_process_committed_events_does_not_look_for_them_first(
    database_url: str, db: Database
) -> None:
    """A commit that wrote events wakes the dispatcher with the highest id it wrote: the pass that follows
    knows there is something to read, without asking the read pool. Events of another process are looked
    for as before."""
    recorder = Recorder()
    dispatcher = Dispatcher(db, node_id="test")
    dispatcher.register("recorder", recorder)
    db.on_commit(lambda info: dispatcher.wake(newest=info.get(NEWEST_EVENT)))
    await dispatcher.drain()
    async with db.core_transaction() as tx:
        await emit(tx, EVENT, data={"n": 1})
        await emit(tx, EVENT, data={"n": 2})

    with recorded(db, [READER], _newest_read) as looks:
        assert await dispatcher.run_once() is True
    assert recorder.seen == [1, 2]
    assert looks == []

    elsewhere = Database(database_url)  # another process's commits do not wake this dispatcher
    try:
        async with elsewhere.transaction() as tx:
            await emit(tx, EVENT, data={"n": 3})
    finally:
        await elsewhere.dispose()
    with recorded(db, [READER], _newest_read) as looks:
        assert await dispatcher.run_once() is True
    assert recorder.seen == [1, 2, 3]
    assert len(looks) == 1
    with recorded(db, [READER], _newest_read) as looks:
        assert await dispatcher.run_once() is False  # nothing new: found out on the read pool alone
    assert len(looks) == 1


class Failing(Recorder):
    """A consumer that writes an event of its own for each it is handed (but its own), then fails, for as
    long as ``failing`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = True

    async def __call__(self, tx: AsyncSession, events: Sequence[EventRow]) -> None:
        for event in events:
            if "n" in event.data:
                await emit(tx, EVENT, data={"echo": event.data["n"]})
        if self.failing:
            raise RuntimeError("the consumer failed")
        await super().__call__(tx, events)


async def test_a_failing_consumer_holds_back_only_itself(db: Database) -> None:
    failing, other = Failing(), Recorder()
    dispatcher = Dispatcher(db, node_id="test")
    dispatcher.register("failing", failing)  # first: stepped alone, the one after it still goes
    dispatcher.register("other", other)
    failing.failing = False
    await dispatcher.drain()  # both hold their lease, at the same place
    failing.failing = True
    async with db.transaction() as tx:
        await emit(tx, EVENT, data={"n": 1})

    with pytest.raises(RuntimeError, match="the consumer failed"):
        await dispatcher.run_once()

    assert other.seen == [1]
    assert await _count(db, OutboxEvent) == 1  # the failing consumer's own write was rolled back
    async with db.read() as tx:
        positions = dict((await tx.execute(select(ConsumerCursor.name, ConsumerCursor.position))).tuples().all())
    assert positions["failing"] < positions["other"]

    failing.failing = False
    await dispatcher.drain()

    assert failing.seen == [1, None]  # its event, then its own echo of it
    assert other.seen == [1, None]  # nothing twice


async def test_platform_events_reach_the_audit_log_once(client: httpx.AsyncClient, platform: Platform) -> None:
    account = await signed_in(client)
    await client.post("/v1/auth/logout", headers=account.headers)

    await platform.drain()
    async with platform.db.transaction() as tx:  # replay everything: consumers must be idempotent
        await tx.execute(update(ConsumerCursor).values(position=0))
    platform.dispatcher._consumers["audit"].high = None
    await platform.drain()

    async with platform.db.read() as tx:
        await scope.unscoped(tx)  # entries of no organization: invisible to any org-scoped reader
        entries = (await tx.scalars(select(AuditEntry).order_by(AuditEntry.at))).all()
    assert [e.action for e in entries] == ["user.created", "session.created", "session.revoked"]
    assert all(e.actor_id == account.user_id for e in entries)
    assert entries[0].target_type == "user"
    assert entries[0].target_id == account.user_id
    assert entries[1].ip == "127.0.0.1"
    assert entries[2].data["reason"] == "logout"


async def test_a_failing_job_is_retried_with_backoff_then_given_up(db: Database) -> None:
    attempts: list[dict[str, Any]] = []

    async def flaky(payload: dict[str, Any]) -> None:
        attempts.append(payload)
        raise ConnectionError("receiver down")

    runner = JobRunner(db, node_id="test")
    runner.register("flaky", flaky)
    async with db.transaction() as tx:
        await enqueue(tx, "flaky", {"to": "x"}, max_attempts=2)

    await runner.run_once()
    async with db.read() as tx:
        job = (await tx.scalars(select(Job))).one()
    assert job.attempts == 1
    assert job.failed_at is None
    assert job.run_at > utcnow()
    assert "receiver down" in (job.last_error or "")

    async with db.transaction() as tx:  # make it due again
        await tx.execute(update(Job).values(run_at=utcnow() - timedelta(seconds=1)))
    await runner.run_once()
    async with db.read() as tx:
        job = (await tx.scalars(select(Job))).one()
    assert len(attempts) == 2
    assert job.failed_at is not None


async def test_a_job_claimed_by_a_dead_worker_is_claimed_again_after_its_lease(db: Database) -> None:
    done: list[str] = []

    async def work(payload: dict[str, Any]) -> None:
        done.append(payload["id"])

    dead = JobRunner(db, node_id="dead", lease_seconds=0.05)
    dead.register("work", work)
    async with db.transaction() as tx:
        await enqueue(tx, "work", {"id": "j1"})
    claimed = await dead._claim()  # claimed, then the worker "dies" before running it
    assert len(claimed) == 1

    alive = JobRunner(db, node_id="alive")
    alive.register("work", work)
    assert await alive.run_once() == 0  # still leased
    await asyncio.sleep(0.1)
    assert await alive.run_once() == 1
    assert done == ["j1"]


async def test_mail_jobs_forget_their_token_once_sent(client: httpx.AsyncClient, platform: Platform) -> None:
    await signed_in(client)
    await platform.drain()

    async with platform.db.read() as tx:
        jobs = (await tx.scalars(select(Job))).all()
    assert jobs
    assert all(j.done_at is not None and j.payload is None for j in jobs)


async def test_concurrent_claims_never_take_the_same_job(db: Database) -> None:
    ran: list[str] = []

    async def work(payload: dict[str, Any]) -> None:
        await asyncio.sleep(0.01)
        ran.append(payload["id"])

    async with db.transaction() as tx:
        for n in range(30):
            await enqueue(tx, "work", {"id": str(n)})
    runners = []
    for name in ("a", "b", "c"):
        runner = JobRunner(db, node_id=name, concurrency=4)
        runner.register("work", work)
        runners.append(runner)

    await asyncio.gather(*(r.drain() for r in runners))

    assert sorted(ran, key=int) == [str(n) for n in range(30)]


def test_events_further_apart_than_the_coalescing_wait_are_never_held_back_even_after_a_burst() -> None:
    """A burst is let pile up; events that come further apart than the wait go at once, every one of them,
    even right after a burst (a pass put off for a burst ends late: that must not make the next event look
    close behind it, or events 30 ms apart would each wait the whole 20 ms, as they once did)."""
    commits = _Commits(within=0.020)
    assert not commits.streaming  # nothing committed yet

    commits.note(100.000)
    assert not commits.streaming  # the first event after a pause goes at once
    commits.note(100.001)
    assert commits.streaming  # a burst: let it pile up

    for n in range(1, 6):  # then one every 30 ms
        commits.note(100.001 + 0.030 * n)
        assert not commits.streaming

    commits.note(100.151 + 0.019)
    assert commits.streaming
