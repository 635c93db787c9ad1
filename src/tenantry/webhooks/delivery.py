"""The deliverer: claims due deliveries, sends them, logs every attempt, schedules retries, disables dead endpoints.

Work lives in ``webhooks_delivery``. A claim takes a lease (``locked_until``) in one transaction,
with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of processes share the work and a
killed one loses nothing: its leases run out and another process claims the deliveries again
(receivers deduplicate by ``webhook-id``: delivery is at least once). Results are written in
batches, one transaction for many attempts, and only for deliveries this process still holds.

Receivers are protected and kept apart: at most ``per_endpoint`` requests in flight to one
endpoint from one process (a slow receiver fills its own slots, never the others'), and an
endpoint's ``rate_limit`` (requests per second) is checked on the platform's limiter, shared by
the fleet when that runs on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.db import scope
from tenantry.db.engine import Database
from tenantry.events.outbox import emit
from tenantry.identity.sealing import Sealer
from tenantry.ratelimit.gcra import Rate
from tenantry.ratelimit.limiter import Limiter
from tenantry.settings import Settings
from tenantry.webhooks.addresses import make_connector
from tenantry.webhooks.events import ENDPOINT_DISABLED
from tenantry.webhooks.models import FAILED, PENDING, SUCCEEDED, Attempt, Delivery, Endpoint
from tenantry.webhooks.sending import Outcome, Request, send
from tenantry.webhooks.signing import secret_key

log = structlog.get_logger(__name__)

ATTEMPTS = Counter("tenantry_webhook_attempts_total", "Webhook requests made, by outcome.", ["outcome"])
FAILURES = Counter("tenantry_webhook_deliveries_failed_total", "Deliveries that ran out of attempts.")
LAG = Histogram(
    "tenantry_webhook_lag_seconds",
    "From when a delivery was due to when its attempt started.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
_SUCCEEDED, _FAILED = ATTEMPTS.labels("succeeded"), ATTEMPTS.labels("failed")


@dataclass(frozen=True)
class DeliveryConfig:
    retry_delays: tuple[float, ...]
    timeout: float
    allow_private: bool
    concurrency: int
    per_endpoint: int
    disable_after: timedelta
    body_limit: int
    poll_interval: float = 1.0
    flush_interval: float = 0.02

    @property
    def lease(self) -> timedelta:
        """How long a claim holds: an attempt, plus one more waiting for a slot of its endpoint, plus margin."""
        return timedelta(seconds=2 * self.timeout + 10)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        return cls(
            retry_delays=settings.webhook_retry_delays,
            timeout=settings.webhook_timeout_seconds,
            allow_private=settings.webhook_allow_private,
            concurrency=settings.webhook_concurrency,
            per_endpoint=settings.webhook_concurrency_per_endpoint,
            disable_after=timedelta(seconds=settings.webhook_disable_after_seconds),
            body_limit=settings.webhook_response_body_limit,
        )


@dataclass(frozen=True, slots=True)
class _Target:
    """An endpoint as the deliverer needs it, its secrets opened."""

    id: uuid.UUID
    org_id: uuid.UUID
    url: str
    headers: dict[str, str]
    keys: tuple[bytes, ...]
    rate_limit: int | None
    failing_since: datetime | None


@dataclass(slots=True)
class _Claimed:
    id: uuid.UUID
    org_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    payload: bytes
    attempt_count: int
    is_one_shot: bool
    due_at: datetime


@dataclass(slots=True)
class _Result:
    delivery: _Claimed
    target: _Target
    outcome: Outcome | None  # None: not sent (the endpoint's rate limit); ``postpone`` says until when
    postpone: float = 0.0


@dataclass
class _Endpoints:
    """Opened secrets, kept per endpoint version (``updated_at``) so they are decrypted once."""

    sealer: Sealer
    opened: dict[tuple[uuid.UUID, datetime], tuple[bytes, ...]] = field(default_factory=dict)

    def target(self, row: Endpoint, now: datetime) -> _Target:
        key = (row.id, row.updated_at)
        keys = self.opened.get(key)
        if keys is None or (row.previous_secret_expires_at is not None and row.previous_secret_expires_at <= now):
            owner = row.id.bytes
            keys = (secret_key(self.sealer.open(row.secret, owner=owner).decode()),)
            if row.previous_secret and row.previous_secret_expires_at and row.previous_secret_expires_at > now:
                keys += (secret_key(self.sealer.open(row.previous_secret, owner=owner).decode()),)
            if len(self.opened) > 10_000:
                self.opened.clear()
            self.opened[key] = keys
        return _Target(row.id, row.org_id, row.url, dict(row.headers or {}), keys, row.rate_limit, row.failing_since)


class Deliverer:
    """Sends due deliveries until stopped; ``drain`` sends everything due and returns (tests, ``worker --once``)."""

    def __init__(
        self,
        db: Database,
        *,
        sealer: Sealer,
        limiter: Limiter,
        config: DeliveryConfig,
        node_id: str,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        self.db = db
        self.limiter = limiter
        self.config = config
        self.node_id = node_id
        self.resolver = resolver
        self._endpoints = _Endpoints(sealer)
        self._busy: dict[uuid.UUID, int] = {}  # endpoint -> requests in flight from this process
        self._in_flight: set[asyncio.Task[None]] = set()
        self._results: list[_Result] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        """Look for due deliveries now (called after commits that wrote some)."""
        self._wake.set()

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=make_connector(
                    allow_private=self.config.allow_private, limit=self.config.concurrency, resolver=self.resolver
                ),
                # One process serves every tenant: no cookie set by one receiver may reach another's.
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),  # bounded by asyncio.timeout in send()
                auto_decompress=False,
                trust_env=False,  # no proxy from the environment between us and the address we checked
            )
        return self._session

    async def run(self) -> None:
        """Deliver until ``request_stop``; then finish the requests in flight and write their results."""
        flusher = asyncio.create_task(self._flush_forever(), name="webhooks.flush")
        try:
            while not self._stopping:
                try:
                    started = await self._start_due()
                except Exception:
                    log.exception("webhooks.claim_failed")
                    started = 0
                if not started and not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.config.poll_interval):
                            await self._wake.wait()
                    self._wake.clear()
        finally:
            await self._finish(flusher)

    async def drain(self) -> int:
        """Send every due delivery (and the retries that fall due meanwhile), write every result, and say
        how many were sent."""
        sent = 0
        while True:
            started = await self._start_due()
            sent += started
            if not started and not self._in_flight:
                break
            if self._in_flight:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
        await self.flush()
        return sent

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _finish(self, flusher: asyncio.Task[None]) -> None:
        if self._in_flight:
            await asyncio.wait(self._in_flight)
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        with contextlib.suppress(Exception):  # leases run out if this fails: the next process resends
            await self.flush()

    # -- claiming ------------------------------------------------------------------------------------

    async def _start_due(self) -> int:
        free = self.config.concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        claimed = await self.unscoped_claim(free)
        for delivery, target in claimed:
            self._busy[target.id] = self._busy.get(target.id, 0) + 1
            task = asyncio.create_task(self._deliver(delivery, target))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return len(claimed)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()  # a slot is free: maybe more is due
        if not task.cancelled() and task.exception() is not None:
            log.error("webhooks.delivery_crashed", error=repr(task.exception()))

    def _due(self, now: datetime) -> Any:
        saturated = [e for e, n in self._busy.items() if n >= self.config.per_endpoint]
        condition = and_(
            Delivery.status == PENDING,
            Delivery.next_attempt_at <= now,
            or_(Delivery.locked_until.is_(None), Delivery.locked_until < now),
        )
        if saturated:
            condition = and_(condition, Delivery.endpoint_id.not_in(saturated))
        return condition

    async def unscoped_claim(self, limit: int) -> list[tuple[_Claimed, _Target]]:
        """Lease up to ``limit`` due deliveries of enabled endpoints, no more per endpoint than it has free
        slots. Crosses organizations (one queue for all), hence unscoped."""
        now = utcnow()
        due = self._due(now)
        if self.db.is_sqlite:  # one writer: look on the read pool first, take the write lock only for real work
            async with self.db.reader.connect() as connection:
                if (await connection.execute(select(Delivery.id).where(due).limit(1))).first() is None:
                    return []
        async with self.db.transaction() as tx:
            await scope.unscoped(tx)
            query = (
                select(Delivery.id, Delivery.endpoint_id)
                .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                .where(due, Endpoint.is_enabled.is_(True))
                .order_by(Delivery.next_attempt_at)
                .limit(limit)
                .with_for_update(of=Delivery, skip_locked=True)
            )
            ids = self._within_endpoint_slots((await tx.execute(query)).all())
            if not ids:
                return []
            rows = (
                await tx.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids))
                    .values(locked_by=self.node_id, locked_until=now + self.config.lease)
                    .returning(
                        Delivery.id,
                        Delivery.org_id,
                        Delivery.endpoint_id,
                        Delivery.event_id,
                        Delivery.payload,
                        Delivery.attempt_count,
                        Delivery.is_one_shot,
                        Delivery.next_attempt_at,
                    )
                )
            ).all()
            endpoints = await tx.scalars(select(Endpoint).where(Endpoint.id.in_({r.endpoint_id for r in rows})))
            targets = {e.id: self._endpoints.target(e, now) for e in endpoints}
        return [
            (
                _Claimed(
                    r.id,
                    r.org_id,
                    r.endpoint_id,
                    r.event_id,
                    r.payload.encode(),
                    r.attempt_count,
                    r.is_one_shot,
                    r.next_attempt_at,
                ),
                targets[r.endpoint_id],
            )
            for r in rows
        ]

    def _within_endpoint_slots(self, candidates: Sequence[Any]) -> list[uuid.UUID]:
        taken: dict[uuid.UUID, int] = {}
        ids = []
        for delivery_id, endpoint_id in candidates:
            used = self._busy.get(endpoint_id, 0) + taken.get(endpoint_id, 0)
            if used < self.config.per_endpoint:
                taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
                ids.append(delivery_id)
        return ids

    # -- sending -------------------------------------------------------------------------------------

    async def _deliver(self, delivery: _Claimed, target: _Target) -> None:
        try:
            while target.rate_limit and (wait := await self._rate_wait(target)) > 0:
                if wait > 1.0:  # not worth holding a slot for: hand it back, due when the limit allows
                    self._record(_Result(delivery, target, None, postpone=wait))
                    return
                await asyncio.sleep(wait)  # then ask again: others waiting beside it may take the turn
            LAG.observe(max(0.0, (utcnow() - delivery.due_at).total_seconds()))
            request = Request(target.url, str(delivery.event_id), delivery.payload, target.keys, target.headers)
            outcome = await send(
                self.session, request, time_limit=self.config.timeout, body_limit=self.config.body_limit
            )
            (_SUCCEEDED if outcome.succeeded else _FAILED).inc()
            self._record(_Result(delivery, target, outcome))
        finally:
            left = self._busy[target.id] - 1
            if left:
                self._busy[target.id] = left
            else:
                del self._busy[target.id]

    async def _rate_wait(self, target: _Target) -> float:
        """Seconds until the endpoint's rate limit lets one more request through (0: go now)."""
        assert target.rate_limit is not None
        rate = Rate(limit=target.rate_limit, period=1.0, burst=target.rate_limit)
        decision = await self.limiter.hit(f"webhooks:{target.id}", rate, policy="webhooks.endpoint")
        return 0.0 if decision.allowed else max(decision.retry_after, 0.001)

    def _record(self, result: _Result) -> None:
        self._results.append(result)

    # -- writing results -----------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            if not self._results:
                continue
            try:
                await self.flush()
            except Exception:
                # Kept for the next round (the database may be restarting); leases cover the wait.
                log.exception("webhooks.flush_failed", pending=len(self._results))
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        """Write the results gathered so far, in one transaction."""
        results, self._results = self._results, []
        if not results:
            return
        try:
            async with self.db.transaction() as tx:
                await scope.unscoped(tx)
                await self._write(tx, results)
        except BaseException:
            self._results[:0] = results
            raise

    async def _write(self, tx: AsyncSession, results: list[_Result]) -> None:
        now = utcnow()
        attempts: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        # An endpoint (or its organization) deleted while its request was in flight took the delivery
        # with it: its attempt has nothing left to belong to.
        ids = [r.delivery.id for r in results]
        alive = set((await tx.scalars(select(Delivery.id).where(Delivery.id.in_(ids)))).all())
        for result in results:
            if result.delivery.id not in alive:
                continue
            attempt, change = self._settle(result, now)
            if attempt is not None:
                attempts.append(attempt)
            changes.append(change)
        if attempts:
            await tx.execute(insert(Attempt.__table__), attempts)  # type: ignore[arg-type]
        await tx.execute(_SETTLE, changes)
        await self._update_endpoints(tx, results, now)

    def _settle(self, result: _Result, now: datetime) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The attempt to log and the delivery's next state."""
        delivery, outcome = result.delivery, result.outcome
        change: dict[str, Any] = {
            "b_id": delivery.id,
            "b_owner": self.node_id,
            "b_status": PENDING,
            "b_count": delivery.attempt_count,
            "b_next": now + timedelta(seconds=result.postpone),
            "b_finished": None,
        }
        if outcome is None:
            return None, change
        count = delivery.attempt_count + 1
        change["b_count"] = count
        if outcome.succeeded:
            change.update(b_status=SUCCEEDED, b_next=None, b_finished=now)
        elif outcome.status == 410 or delivery.is_one_shot or count > len(self.config.retry_delays):
            FAILURES.inc()
            change.update(b_status=FAILED, b_next=None, b_finished=now)
        else:
            delay = self.config.retry_delays[count - 1] * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not secrecy
            if outcome.retry_after is not None:
                delay = outcome.retry_after  # the receiver said when: honour it
            change["b_next"] = now + timedelta(seconds=delay)
        attempt = {
            "id": uuid.uuid4(),
            "org_id": delivery.org_id,
            "delivery_id": delivery.id,
            "at": outcome.at,
            "response_status": outcome.status,
            "duration_ms": outcome.duration_ms,
            "error": outcome.error,
            "response_body": outcome.body,
        }
        return attempt, change

    async def _update_endpoints(self, tx: AsyncSession, results: list[_Result], now: datetime) -> None:
        """Endpoints that answered well are no longer failing; those that only fail start (or go on) failing,
        and are disabled after ``disable_after`` of that, or at once on 410 Gone."""
        latest: dict[uuid.UUID, _Result] = {}
        for result in results:
            if result.outcome is not None:
                latest[result.target.id] = result
        for endpoint_id, result in latest.items():
            assert result.outcome is not None
            target = result.target
            if result.outcome.succeeded:
                if target.failing_since is not None:
                    await tx.execute(update(Endpoint).where(Endpoint.id == endpoint_id).values(failing_since=None))
            elif result.outcome.status == 410:
                await self._disable(tx, target, reason="gone", failing_since=target.failing_since)
            elif target.failing_since is None:
                await tx.execute(
                    update(Endpoint)
                    .where(Endpoint.id == endpoint_id, Endpoint.failing_since.is_(None))
                    .values(failing_since=now)
                )
            elif now - target.failing_since >= self.config.disable_after:
                await self._disable(tx, target, reason="failing", failing_since=target.failing_since)

    async def _disable(self, tx: AsyncSession, target: _Target, *, reason: str, failing_since: datetime | None) -> None:
        done = await tx.execute(
            update(Endpoint)
            .where(Endpoint.id == target.id, Endpoint.is_enabled.is_(True))
            .values(is_enabled=False, disabled_reason=reason, updated_at=utcnow())
            .returning(Endpoint.id)
        )
        if done.first() is None:
            return  # already disabled (by someone else, or by an earlier batch)
        log.warning("webhooks.endpoint_disabled", endpoint_id=str(target.id), reason=reason)
        data = {
            "endpoint_id": str(target.id),
            "url": target.url,
            "reason": reason,
            "failing_since": failing_since.isoformat() if failing_since else None,
        }
        await emit(tx, ENDPOINT_DISABLED, data=data, org_id=target.org_id)


# One statement for a whole batch of deliveries (executemany). Only a delivery this process still
# holds is changed: if its lease ran out and another process took it, that one's result stands.
_DELIVERY = Delivery.__table__.c
_SETTLE = (
    update(Delivery.__table__)  # type: ignore[arg-type]  # Core, not ORM: a list of parameters makes one executemany
    .where(_DELIVERY.id == bindparam("b_id"), _DELIVERY.locked_by == bindparam("b_owner"))
    .values(
        status=bindparam("b_status"),
        attempt_count=bindparam("b_count"),
        next_attempt_at=bindparam("b_next"),
        finished_at=bindparam("b_finished"),
        locked_by=None,
        locked_until=None,
    )
)
