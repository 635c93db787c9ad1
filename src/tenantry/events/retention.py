"""Forgetting what is old: the outbox, finished jobs and, through the domains' own sweeps, their logs.

An outbox event is kept until every consumer has read past it AND it is older than the retention
(replays and late consumers read from it until then). Deletions go in small batches, each its own
transaction, so a sweep never holds SQLite's write lock, or many PostgreSQL row locks, for long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import delete, func, or_, select

from tenantry.core.clock import utcnow
from tenantry.db.engine import Database
from tenantry.events.models import ConsumerCursor, Job, OutboxEvent

log = structlog.get_logger(__name__)

BATCH = 1000


class Sweep(Protocol):
    def __call__(self, *, before: datetime) -> Awaitable[int]:
        """Delete what is older than ``before``; return how many rows went."""
        ...


async def forget_old_events(db: Database, *, before: datetime) -> int:
    """Delete outbox events older than ``before`` that every consumer has read; returns how many."""
    removed = 0
    while True:
        async with db.transaction() as tx:
            read_by_all = (await tx.execute(select(func.min(ConsumerCursor.position)))).scalar() or 0
            ids = select(OutboxEvent.id).where(OutboxEvent.id <= read_by_all, OutboxEvent.occurred_at < before)
            done = await tx.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(ids.limit(BATCH).scalar_subquery())))
        count = int(done.rowcount or 0)  # type: ignore[attr-defined]
        removed += count
        if count < BATCH:
            return removed


async def forget_finished_jobs(db: Database, *, before: datetime) -> int:
    """Delete jobs that finished (done or given up) before ``before``; returns how many."""
    removed = 0
    while True:
        async with db.transaction() as tx:
            finished = or_(Job.done_at < before, Job.failed_at < before)
            ids = select(Job.id).where(finished).limit(BATCH).scalar_subquery()
            done = await tx.execute(delete(Job).where(Job.id.in_(ids)))
        count = int(done.rowcount or 0)  # type: ignore[attr-defined]
        removed += count
        if count < BATCH:
            return removed


class Sweeper:
    """Runs every registered sweep now and then (in ``serve`` when embedded, in ``worker`` otherwise)."""

    def __init__(self, *, every: float = 3600.0) -> None:
        self.every = every
        self._sweeps: list[tuple[str, Sweep, timedelta]] = []
        self._stop = asyncio.Event()

    def register(self, name: str, sweep: Sweep, *, keep: timedelta) -> None:
        """Call ``sweep(now - keep)`` on every round."""
        self._sweeps.append((name, sweep, keep))

    async def sweep_once(self) -> dict[str, int]:
        """One round; how many rows each sweep removed."""
        removed = {}
        for name, sweep, keep in self._sweeps:
            removed[name] = await sweep(before=utcnow() - keep)
        if any(removed.values()):
            log.info("retention.swept", **removed)
        return removed

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.sweep_once()
            except Exception:
                log.exception("retention.failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every):
                    await self._stop.wait()

    def request_stop(self) -> None:
        self._stop.set()
