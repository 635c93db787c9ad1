"""Handing outbox events to consumers, at least once, in order, without skipping late commits.

Each consumer keeps a cursor. On PostgreSQL, ids come from a sequence when a row is inserted, not
when it commits, so a row with a smaller id can become visible after a larger one. A gap seen
between two ids is therefore remembered and re-read until its row shows up or ``gap_timeout``
passes (the transaction rolled back). The stored cursor never moves past an open gap: after a
restart the consumer re-reads from there, which is why consumers must be idempotent.

Only the process holding a consumer's lease reads for it, so several ``serve`` or ``worker``
processes may run dispatchers side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

import structlog
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.db.engine import Database
from tenantry.db.upsert import insert_ignoring_conflicts
from tenantry.events.models import ConsumerCursor, Event, OutboxEvent

log = structlog.get_logger(__name__)

Handler = Callable[[AsyncSession, Sequence[Event]], Awaitable[None]]


@dataclass
class _Consumer:
    name: str
    handler: Handler
    high: int | None = None  # highest id handed over by this process
    gaps: dict[int, float] = field(default_factory=dict)  # missing id -> give up at (monotonic)
    lease_renew_at: float = 0.0  # monotonic time after which the lease must be renewed

    def position(self) -> int:
        """What may be stored as read: never past an open gap."""
        assert self.high is not None
        return min(self.high, min(self.gaps) - 1) if self.gaps else self.high


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
        self._consumers: dict[str, _Consumer] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._busy_at = 0.0  # monotonic time of the last pass that found events
        # The batch read last in this pass, and what was asked for it: consumers at the same place (the usual
        # case) are handed the same rows rather than each reading and decoding them again.
        self._read: tuple[tuple[int, tuple[int, ...]], Sequence[Event]] | None = None

    def register(self, name: str, handler: Handler) -> None:
        """Add a consumer. Its handler runs in the transaction that also advances its cursor."""
        self._consumers[name] = _Consumer(name, handler)

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll (called after commits that wrote events)."""
        self._wake.set()

    def request_stop(self) -> None:
        """Finish the work in hand, then leave ``run``; cancelling mid-transaction could lose a connection."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Dispatch until cancelled."""
        await self._ensure_cursors()
        while not self._stopping:
            try:
                busy = await self.run_once()
            except Exception:
                log.exception("dispatcher.error")
                busy = False
            if busy:
                self._busy_at = time.monotonic()
            elif not self._stopping:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # arrives just as the event is set, and the task would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await self._wake.wait()
                # Commits coming closer together than ``coalesce`` (a stream) are let pile up and read in
                # one transaction rather than taking the write lock once per event; an event after a
                # pause goes at once (a webhook's latency starts here).
                if time.monotonic() - self._busy_at < self.coalesce:
                    await asyncio.sleep(self.coalesce)
                self._wake.clear()

    async def drain(self) -> None:
        """Dispatch until every consumer has caught up (used by tests and by ``worker --once``)."""
        await self._ensure_cursors()
        while await self.run_once():
            pass

    async def run_once(self) -> bool:
        """One pass over the consumers; returns whether any of them found events."""
        found = False
        try:
            for consumer in self._consumers.values():
                found = await self._step(consumer) or found
        finally:
            self._read = None
        return found

    async def _ensure_cursors(self) -> None:
        async with self.db.transaction() as session:
            rows = [{"name": name, "position": 0, "updated_at": utcnow()} for name in self._consumers]
            await insert_ignoring_conflicts(session, ConsumerCursor.__table__, rows)  # type: ignore[arg-type]

    async def _nothing_new(self, consumer: _Consumer) -> bool:
        """Whether a held lease shows nothing to read, judged on the read pool without the write lock."""
        if consumer.high is None or consumer.gaps or time.monotonic() >= consumer.lease_renew_at:
            return False
        async with self.db.reader.connect() as connection:
            newest = (await connection.execute(select(func.max(OutboxEvent.id)))).scalar()
        return newest is None or newest <= consumer.high

    async def _step(self, consumer: _Consumer) -> bool:
        if await self._nothing_new(consumer):
            return False
        try:
            async with self.db.transaction() as session:
                position = await self._acquire(session, consumer)
                if position is None:
                    return False
                if consumer.high is None:
                    consumer.high = position
                events = await self._fetch(session, consumer)
                if not events:
                    await self._save(session, consumer)
                    return False
                await consumer.handler(session, events)
                self._track(consumer, events)
                await self._save(session, consumer)
        except BaseException:
            # Nothing of this pass committed (the save or the commit itself may be what failed): what it
            # tracked in memory must not stand, or the next pass would read past events never handled.
            consumer.high, consumer.gaps = None, {}
            raise
        return True

    async def _acquire(self, session: AsyncSession, consumer: _Consumer) -> int | None:
        """Take or extend this process's lease; the stored position, or ``None`` if another holds it."""
        now = utcnow()
        table = ConsumerCursor
        result = await session.execute(
            update(table)
            .where(table.name == consumer.name)
            .where(or_(table.owner == self.node_id, table.owner.is_(None), table.lease_until < now))
            .values(owner=self.node_id, lease_until=now + self.lease)
            .returning(table.position)
        )
        position = result.scalar_one_or_none()
        consumer.lease_renew_at = time.monotonic() + self.lease.total_seconds() / 3
        if position is None:
            consumer.high, consumer.gaps = None, {}  # someone else reads; start afresh if we get it back
        return position

    async def _fetch(self, session: AsyncSession, consumer: _Consumer) -> Sequence[Event]:
        now = time.monotonic()
        for gap, deadline in list(consumer.gaps.items()):
            if deadline < now:
                del consumer.gaps[gap]
        assert consumer.high is not None
        asked = (consumer.high, tuple(sorted(consumer.gaps)))
        if self._read is not None and self._read[0] == asked:
            # Read by another consumer in this pass: events are never changed once written, and a row committed
            # since is read at the next pass, as if this consumer had read a moment earlier.
            return self._read[1]
        condition = OutboxEvent.id > consumer.high
        if consumer.gaps:
            condition = or_(condition, OutboxEvent.id.in_(list(consumer.gaps)))
        table = OutboxEvent.__table__
        query = select(table).where(condition).order_by(OutboxEvent.id).limit(self.batch_size)
        # On the session's connection: plain rows, without the ORM's result machinery (events are only read,
        # by every consumer).
        connection = await session.connection()
        events = cast(Sequence[Event], (await connection.execute(query)).all())
        self._read = (asked, events)
        return events

    def _track(self, consumer: _Consumer, events: Sequence[Event]) -> None:
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

    async def _save(self, session: AsyncSession, consumer: _Consumer) -> None:
        await session.execute(
            update(ConsumerCursor)
            .where(ConsumerCursor.name == consumer.name)
            .values(position=consumer.position(), updated_at=utcnow())
        )
