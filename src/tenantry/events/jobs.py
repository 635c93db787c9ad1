"""Durable background work: rows in ``events_job``, claimed by any worker, retried with backoff.

A job is enqueued in the caller's transaction, so it exists if and only if the change that asked
for it committed. Claims take a lease (``locked_until``): a worker killed mid-job loses nothing,
its jobs are claimed again once the lease runs out. On PostgreSQL claims use
``FOR UPDATE SKIP LOCKED`` so workers on many machines never take the same job.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.db.engine import Database
from tenantry.events.models import Job

log = structlog.get_logger(__name__)

JobHandler = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class JobKind:
    handler: JobHandler
    erase_payload: bool  # drop the payload once done (it may hold a secret, such as a mailed token)


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    run_at: datetime | None = None,
    max_attempts: int = 10,
) -> uuid.UUID:
    """Schedule ``kind`` to run with ``payload`` once the surrounding transaction commits."""
    job = Job(kind=kind, payload=payload, run_at=run_at or utcnow(), max_attempts=max_attempts)
    session.add(job)
    session.info["jobs"] = True
    await session.flush()
    return job.id


def backoff(attempt: int) -> timedelta:
    """Exponential backoff with full jitter: about 2, 4, 8 … seconds, capped at an hour."""
    ceiling = min(3600.0, 2.0**attempt)
    return timedelta(seconds=ceiling / 2 + random.random() * ceiling / 2)  # noqa: S311


class JobRunner:
    """Claims due jobs and runs their handlers, a bounded number at a time."""

    def __init__(
        self,
        db: Database,
        *,
        node_id: str,
        concurrency: int = 16,
        lease_seconds: float = 60.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.db = db
        self.node_id = node_id
        self.concurrency = concurrency
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_interval = poll_interval
        self._kinds: dict[str, JobKind] = {}
        self._wake = asyncio.Event()
        self._stopping = False

    def register(self, kind: str, handler: JobHandler, *, erase_payload: bool = False) -> None:
        """Run ``handler`` for jobs of ``kind``; with ``erase_payload`` the payload is dropped once done."""
        self._kinds[kind] = JobKind(handler, erase_payload)

    def wake(self) -> None:
        """Look for due jobs now rather than at the next poll (called after commits that enqueued jobs)."""
        self._wake.set()

    def request_stop(self) -> None:
        """Finish the work in hand, then leave ``run``; cancelling mid-transaction could lose a connection."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Run jobs until cancelled."""
        while not self._stopping:
            try:
                ran = await self.run_once()
            except Exception:
                log.exception("jobs.error")
                ran = 0
            if not ran and not self._stopping:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # arrives just as the event is set, and the task would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await self._wake.wait()
                self._wake.clear()

    async def drain(self) -> None:
        """Run every due job, and those they make due, until none is left."""
        while await self.run_once():
            pass

    async def run_once(self) -> int:
        """Claim one batch of due jobs and run it; returns how many ran."""
        jobs = await self._claim()
        if jobs:
            await asyncio.gather(*(self._execute(job_id, kind, payload) for job_id, kind, payload in jobs))
        return len(jobs)

    async def _claim(self) -> list[tuple[uuid.UUID, str, dict[str, Any]]]:
        now = utcnow()
        due = and_(
            Job.done_at.is_(None),
            Job.failed_at.is_(None),
            Job.run_at <= now,
            Job.kind.in_(list(self._kinds)),
            or_(Job.locked_until.is_(None), Job.locked_until < now),
        )
        if self.db.is_sqlite:
            # One writer only: look on the read pool first, take the write lock only for real work.
            async with self.db.reader.connect() as connection:
                if (await connection.execute(select(Job.id).where(due).limit(1))).first() is None:
                    return []
        async with self.db.transaction() as session:
            query = select(Job.id).where(due).order_by(Job.run_at).limit(self.concurrency)
            ids = list((await session.scalars(query.with_for_update(skip_locked=True))).all())
            if not ids:
                return []
            result = await session.execute(
                update(Job)
                .where(Job.id.in_(ids))
                .values(locked_by=self.node_id, locked_until=now + self.lease, attempts=Job.attempts + 1)
                .returning(Job.id, Job.kind, Job.payload)
            )
            return [(row.id, row.kind, row.payload or {}) for row in result]

    async def _execute(self, job_id: uuid.UUID, kind: str, payload: dict[str, Any]) -> None:
        spec = self._kinds[kind]
        try:
            await spec.handler(payload)
        except Exception as exc:
            log.warning("jobs.failed", job_id=str(job_id), kind=kind, error=repr(exc))
            await self._fail(job_id, repr(exc))
            return
        values: dict[str, Any] = {"done_at": utcnow(), "locked_until": None}
        if spec.erase_payload:
            values["payload"] = None
        async with self.db.transaction() as session:
            await session.execute(update(Job).where(Job.id == job_id).values(**values))

    async def _fail(self, job_id: uuid.UUID, error: str) -> None:
        async with self.db.transaction() as session:
            job = await session.get(Job, job_id)
            if job is None:
                return
            job.last_error = error[:2000]
            job.locked_until = None
            if job.attempts >= job.max_attempts:
                job.failed_at = utcnow()
            else:
                job.run_at = utcnow() + backoff(job.attempts)
