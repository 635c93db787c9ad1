"""Handing outbox events to consumers, at least once, in order, without skipping late commits.

Each consumer keeps a cursor. On PostgreSQL, ids come from a sequence when a row is inserted, not
when it commits, so a row with a smaller id can become visible after a larger one. A gap seen
between two ids is therefore remembered and re-read until its row shows up or ``gap_timeout``
passes (the transaction rolled back). The stored cursor never moves past an open gap: after a
restart the consumer re-reads from there, which is why consumers must be idempotent.

Only the process holding a consumer's lease reads for it, so several ``serve`` or ``worker``
processes may run dispatchers side by side. A lease is renewed when a third of it has passed, not on
every pass; each pass's cursor update names its owner, so a process whose lease was taken from it
(it stalled past the lease) commits nothing it handled meanwhile.

Consumers at the same place (the usual case, once they have caught up) are handed each batch in one
transaction, with one cursor update for all of them: a pass then costs one transaction rather than
one per consumer, which is most of what dispatching a sign-in's event costs. If any part of that
fails, nothing of it commits and each consumer is stepped in a transaction of its own, so a failing
consumer holds back only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

import structlog
from sqlalchemy import Table, bindparam, func, or_, select, update

from tenantry.core.clock import utcnow
from tenantry.db.engine import Database
from tenantry.db.statements import Lane, Listing, Statement
from tenantry.db.upsert import insert_ignoring_conflicts
from tenantry.events.models import ConsumerCursor, EventRow, OutboxEvent

log = structlog.get_logger(__name__)

_CURSORS = cast(Table, ConsumerCursor.__table__)
_OUTBOX = cast(Table, OutboxEvent.__table__)
_EVENT_COLUMNS = [_OUTBOX.c[name] for name in EventRow._fields]

# A pass's statements, hot ones (one pass per sign-in's event, at a sign-in's pace): plain rows, as named tuples.
_NEWEST = Statement(select(func.max(_OUTBOX.c.id)))
_AFTER = Statement(
    select(*_EVENT_COLUMNS).where(_OUTBOX.c.id > bindparam("after")).order_by(_OUTBOX.c.id).limit(bindparam("limit")),
    ("after", "limit"),
    row=EventRow._make,
)
_MISSING = Listing(  # rows that were gaps: at most one each, so no limit is needed
    lambda ids: select(*_EVENT_COLUMNS).where(_OUTBOX.c.id.in_(ids)), _OUTBOX.c.id.type, row=EventRow._make
)
_ACQUIRE = Statement(
    update(_CURSORS)
    .where(_CURSORS.c.name == bindparam("consumer"))
    .where(
        or_(
            _CURSORS.c.owner == bindparam("node"),
            _CURSORS.c.owner.is_(None),
            _CURSORS.c.lease_until < bindparam("now"),
        )
    )
    .values(owner=bindparam("node"), lease_until=bindparam("until"))
    .returning(_CURSORS.c.position),
    ("consumer", "node", "now", "until"),
)
_SAVE = Listing(
    lambda names: (
        update(_CURSORS)
        .where(_CURSORS.c.name.in_(names), _CURSORS.c.owner == bindparam("node"))
        .values(position=bindparam("to"), updated_at=bindparam("at"))
    ),
    _CURSORS.c.name.type,
    ("node", "to", "at"),
)

Handler = Callable[[Lane, Sequence[EventRow]], Awaitable[None]]


@dataclass
class _Consumer:
    name: str
    handler: Handler
    high: int | None = None  # highest id handed over by this process
    gaps: dict[int, float] = field(default_factory=dict)  # missing id -> give up at (monotonic)
    lease_renew_at: float = 0.0  # monotonic time after which the lease must be renewed
    saved: int | None = None  # the position stored by this process's last pass

    def restart(self, position: int | None) -> None:
        """Forget what this process tracked: the consumer goes on from ``position`` (``None``: from what the
        next lease finds stored)."""
        self.high, self.gaps, self.saved = position, {}, position

    def position(self) -> int:
        """What may be stored as read: never past an open gap."""
        assert self.high is not None
        return min(self.high, min(self.gaps) - 1) if self.gaps else self.high


@dataclass
class _Commits:
    """When this process's commits with events came: a stream while they come closer together than
    ``within`` seconds, worth letting pile up so that one pass reads them all.

    Judged by the commits' own times, never by when passes ran: a pass put off to let a stream pile up
    ends late, and measured from its end, events 30 ms apart each looked 10 ms after the last and were
    each put off for the whole wait, forever after one burst (the webhook latency's 20 ms fan-out stage)."""

    within: float
    last: float = -math.inf
    gap: float = math.inf  # between the last two commits

    def note(self, at: float) -> None:
        self.gap, self.last = at - self.last, at

    @property
    def streaming(self) -> bool:
        return self.gap < self.within


@dataclass
class _Pass:
    """What one pass looks up once for all its consumers (passes may overlap: ``drain`` beside ``run``)."""

    # The newest outbox id (0 for an empty outbox), once looked up.
    newest: int | None = None
    # The batch read last, and what was asked for it: consumers at the same place (the usual case) are handed
    # the same rows rather than each reading and decoding them again.
    read: tuple[tuple[int, tuple[int, ...]], Sequence[EventRow]] | None = None


class Dispatcher:
    """Reads the outbox for every registered consumer; woken after commits, else polls."""

    def __init__(
        self,
        db: Database,
        *,
        node_id: str,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        gap_timeout: float = 60.0,
        lease_seconds: float = 30.0,
        coalesce: float = 0.02,
    ) -> None:
        self.db = db
        self.node_id = node_id
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.gap_timeout = gap_timeout
        self.lease = timedelta(seconds=lease_seconds)
        self.coalesce = coalesce
        self._commits = _Commits(coalesce)
        self._consumers: dict[str, _Consumer] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._committed = 0  # the highest outbox id this process is known to have committed

    def register(self, name: str, handler: Handler) -> None:
        """Add a consumer. Its handler runs in the transaction that also advances its cursor."""
        self._consumers[name] = _Consumer(name, handler)

    def wake(self, newest: int | None = None) -> None:
        """Look at the outbox now rather than at the next poll (called after commits that wrote events,
        with the highest outbox id they wrote when it is known)."""
        if newest is not None and newest > self._committed:
            self._committed = newest
        self._commits.note(time.monotonic())
        self._wake.set()

    def request_stop(self) -> None:
        """Finish the work in hand, then leave ``run``; cancelling mid-transaction could lose a connection."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Dispatch until cancelled."""
        ready = False  # whether every consumer's cursor exists (made in the loop: a failure there is retried too)
        while not self._stopping:
            try:
                if not ready:
                    await self._ensure_cursors()
                    ready = True
                _, full = await self._pass()
            except LeaseLost as lost:
                log.warning("dispatcher.lease_lost", detail=str(lost))
                full = False
            except Exception:
                log.exception("dispatcher.error")
                full = False
            # Only a full batch says more is waiting; anything committed since the pass began has set the wake.
            if not full and not self._stopping:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # arrives just as the event is set, and the task would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await self._wake.wait()
                # Commits coming closer together than ``coalesce`` (a stream) are let pile up and read in
                # one transaction rather than taking the write lock once per event; an event after a
                # pause goes at once (a webhook's latency starts here).
                if self._commits.streaming:
                    await asyncio.sleep(self.coalesce)
                self._wake.clear()

    async def drain(self) -> None:
        """Dispatch until every consumer has caught up (used by tests and by ``worker --once``)."""
        await self._ensure_cursors()
        while await self.run_once():
            pass

    async def run_once(self) -> bool:
        """One pass over the consumers; returns whether any of them found events."""
        found, _ = await self._pass()
        return found

    async def _pass(self) -> tuple[bool, bool]:
        """One pass over the consumers: whether any found events, and whether any found a full batch. A
        consumer whose step fails holds back only itself; the pass raises its error once the others are done."""
        found = full = False
        seen = _Pass()
        alone = list(self._consumers.values())
        together = self._in_step(alone)
        if len(together) > 1:
            handed = await self._step_together(together, seen)
            if handed is not None:
                found, full = handed > 0, handed >= self.batch_size
                alone = [consumer for consumer in alone if consumer not in together]
        failure: Exception | None = None
        for consumer in alone:
            try:
                handed = await self._step(consumer, seen)
            except Exception as error:  # the consumers after it still go: the first failure is raised at the end
                failure = failure or error
                continue
            found, full = found or handed > 0, full or handed >= self.batch_size
        if failure is not None:
            raise failure
        return found, full

    def _in_step(self, consumers: Sequence[_Consumer]) -> list[_Consumer]:
        """The most consumers at one place with no gap and no lease to renew: the usual case, once every
        consumer has caught up. They need one batch, read once, and one cursor update, in one transaction."""
        places: dict[int, list[_Consumer]] = {}
        for consumer in consumers:
            if not consumer.gaps and not self._lease_due(consumer):
                assert consumer.high is not None
                places.setdefault(consumer.high, []).append(consumer)
        return max(places.values(), key=len, default=[])

    async def _ensure_cursors(self) -> None:
        async with self.db.transaction() as session:
            rows = [{"name": name, "position": 0, "updated_at": utcnow()} for name in self._consumers]
            await insert_ignoring_conflicts(session, ConsumerCursor.__table__, rows)  # type: ignore[arg-type]

    async def _nothing_new(self, consumer: _Consumer, seen: _Pass) -> bool:
        """Whether a held lease shows nothing to read, judged on the read pool without the write lock."""
        if consumer.gaps or self._lease_due(consumer):
            return False
        assert consumer.high is not None
        if self._committed > consumer.high:
            return False  # this process committed events past it: no need to look (the usual wake-up)
        if seen.newest is None:
            async with self.db.direct_read() as reader:
                seen.newest = await _NEWEST.scalar(reader) or 0
        return seen.newest <= consumer.high

    @staticmethod
    def _lease_due(consumer: _Consumer) -> bool:
        return consumer.high is None or time.monotonic() >= consumer.lease_renew_at

    async def _step(self, consumer: _Consumer, seen: _Pass) -> int:
        """Hand ``consumer`` its next batch; how many events it was handed."""
        if await self._nothing_new(consumer, seen):
            return 0
        try:
            async with self.db.direct() as tx:
                if self._lease_due(consumer):
                    position = await self._acquire(tx, consumer)
                    if position is None:  # someone else reads; start afresh if this process gets it back
                        consumer.restart(None)
                        return 0
                    if consumer.high is None or position != consumer.saved:
                        # New to this consumer, or another process moved it while this one's lease had lapsed.
                        consumer.restart(position)
                events = await self._fetch(tx, consumer, seen)
                if events:
                    await consumer.handler(tx, events)
                    self._track(consumer, events)
                await self._save(tx, [consumer])
        except BaseException:
            # Nothing of this pass committed (the save or the commit itself may be what failed): what it
            # tracked in memory must not stand, or the next pass would read past events never handled.
            consumer.restart(None)
            raise
        return len(events)

    async def _acquire(self, tx: Lane, consumer: _Consumer) -> int | None:
        """Take or extend this process's lease; the stored position, or ``None`` if another holds it."""
        now = utcnow()
        position = await _ACQUIRE.scalar(tx, consumer.name, self.node_id, now, now + self.lease)
        consumer.lease_renew_at = time.monotonic() + self.lease.total_seconds() / 3
        return position

    async def _fetch(self, tx: Lane, consumer: _Consumer, seen: _Pass) -> Sequence[EventRow]:
        now = time.monotonic()
        for gap, deadline in list(consumer.gaps.items()):
            if deadline < now:
                del consumer.gaps[gap]
        assert consumer.high is not None
        asked = (consumer.high, tuple(sorted(consumer.gaps)))
        if seen.read is not None and seen.read[0] == asked:
            # Read by another consumer in this pass: events are never changed once written, and a row committed
            # since is read at the next pass, as if this consumer had read a moment earlier.
            return seen.read[1]
        events: list[EventRow] = await _AFTER.rows(tx, consumer.high, self.batch_size)
        if consumer.gaps:
            # Gaps that filled come first (their ids are lower); what the batch has no room for is read next time.
            filled = await _MISSING.rows(tx, asked[1])
            events = sorted(filled, key=_by_id)[: self.batch_size] + events[: max(0, self.batch_size - len(filled))]
        seen.read = (asked, events)
        return events

    def _track(self, consumer: _Consumer, events: Sequence[EventRow]) -> None:
        assert consumer.high is not None
        first, last = events[0].id, events[-1].id
        if not consumer.gaps and first == consumer.high + 1 and last - first + 1 == len(events):
            consumer.high = last  # the usual case: the ids that follow, without a hole (none opened, none closed)
            return
        deadline = time.monotonic() + self.gap_timeout
        previous = consumer.high
        for event in events:
            consumer.gaps.pop(event.id, None)
            if event.id > previous:
                for missing in range(previous + 1, event.id):
                    consumer.gaps.setdefault(missing, deadline)
                previous = event.id
        consumer.high = previous

    async def _step_together(self, group: Sequence[_Consumer], seen: _Pass) -> int | None:
        """Hand every consumer of ``group`` (see ``_in_step``) the same batch in one transaction; how many
        events each was handed. ``None`` if any of it failed: then nothing of it committed, what the consumers
        tracked is as before, and the caller steps each on its own, so that a failing handler holds back its
        own consumer only."""
        if await self._nothing_new(group[0], seen):
            return 0
        before = [(consumer.high, consumer.saved) for consumer in group]
        try:
            async with self.db.direct() as tx:
                events = await self._fetch(tx, group[0], seen)
                if events:
                    for consumer in group:
                        await consumer.handler(tx, events)
                        self._track(consumer, events)
                await self._save(tx, group)
        except BaseException as error:
            for consumer, (high, saved) in zip(group, before, strict=True):
                consumer.high, consumer.gaps, consumer.saved = high, {}, saved
            if not isinstance(error, Exception):
                raise
            log.debug("dispatcher.shared_step_failed", consumers=[consumer.name for consumer in group], exc_info=True)
            return None
        return len(events)

    async def _save(self, tx: Lane, consumers: Sequence[_Consumer]) -> None:
        """Store the position of ``consumers`` (all at the same one), if it moved, as this process's: raises
        ``LeaseLost`` (and the pass rolls back) if another process holds any of them now."""
        position = consumers[0].position()
        moved = [consumer for consumer in consumers if consumer.saved != position]
        if not moved:
            return
        names = [consumer.name for consumer in moved]
        if await _SAVE.run(tx, names, self.node_id, position, utcnow()) != len(moved):
            raise LeaseLost(names)
        for consumer in moved:
            consumer.saved = position


def _by_id(event: EventRow) -> int:
    return event.id


class LeaseLost(RuntimeError):
    """Another process took a consumer's lease while this one was handling a batch (it stalled past the lease)."""

    def __init__(self, consumers: Sequence[str]) -> None:
        names = ", ".join(repr(name) for name in consumers)
        super().__init__(f"the lease of {names} was taken by another process")
