"""The deliverer: holds due deliveries, sends them, and hands what came of each to the ledger.

Work lives in ``webhooks_delivery``. A process takes deliveries two ways, both with a lease
(``locked_until``), so a killed process loses nothing: its leases run out and another process
claims the deliveries again (receivers deduplicate by ``webhook-id``: delivery is at least once).
- The fan-out of this process leases fresh deliveries to it in the transaction that writes them,
  and hands them over in memory after the commit: no claim, no wait (see ``fanout``).
- Fresh deliveries the fan-out had no room for are written unleased, for whoever claims them, and
  remembered here as hints (``hint``): when room frees, they are leased by id, their body already in
  memory, as long as nobody else has taken them meanwhile (a backlog costs one ``UPDATE`` per batch).
- Otherwise it claims due ones (retries, those of other processes' expired leases) in one
  transaction, with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so any number of processes share them.

Receivers are protected and kept apart: at most ``per_endpoint`` requests in flight to one endpoint
from one process, and as many again held in a queue of its own (a slow receiver fills its own
slots, never the others'); an endpoint's ``rate_limit`` (requests per second) is checked on the
platform's limiter, shared by the fleet when that runs on Redis.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import aiohttp
import structlog
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from sqlalchemy import String, and_, bindparam, literal_column, or_, select, update

from tenantry.core.clock import utcnow
from tenantry.db import scope
from tenantry.db.engine import Database
from tenantry.db.statements import Lane, Listing
from tenantry.identity.sealing import Sealer
from tenantry.ratelimit.gcra import Rate
from tenantry.ratelimit.limiter import Limiter
from tenantry.webhooks.addresses import make_connector
from tenantry.webhooks.ledger import Ledger
from tenantry.webhooks.models import ENDPOINT_ROW_COLUMNS, PENDING, Delivery, Endpoint, EndpointRow
from tenantry.webhooks.senders import Senders
from tenantry.webhooks.sending import Deadlines, Outcome, Request, send
from tenantry.webhooks.work import Claimed, DeliveryConfig, Job, Result, Target, Targets

log = structlog.get_logger(__name__)


class Lags:
    """``tenantry_webhook_lag_seconds``: from when a delivery was due to when its attempt started, a histogram
    counted in a plain list and read when scraped. prometheus_client's ``Histogram`` takes two locks and walks
    its buckets in Python on every observation (about 2 µs of the event loop's time per delivery); only the
    event loop's thread observes here, so a bisection and two additions do."""

    NAME = "tenantry_webhook_lag_seconds"
    BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)  # per bucket, not cumulative; the last is beyond every bound
        self.sum = 0.0
        self._labels = [str(floatToGoString(bound)) for bound in (*self.BOUNDS, math.inf)]  # type: ignore[no-untyped-call]

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1  # the first bound it is at most
        self.sum += seconds

    def collect(self) -> Iterator[Metric]:
        buckets, below = [], 0
        for label, count in zip(self._labels, list(self.counts), strict=True):
            below += count
            buckets.append((label, below))
        yield HistogramMetricFamily(
            self.NAME, "From when a delivery was due to when its attempt started.", buckets=buckets, sum_value=self.sum
        )


LAGS = Lags()
REGISTRY.register(LAGS)  # module level: registered once per process

_DELIVERY = Delivery.__table__.c
_PENDING = literal_column(f"'{PENDING}'", String())
CLAIM_QUIET = 0.05  # seconds
HINTS = 10_000  # fresh deliveries remembered for leasing by id, at most
HINT_BYTES = 32 * 1024 * 1024  # and at most this much of their bodies
UNSIGNABLE = (
    "Not sent: the endpoint's signing secret cannot be opened (was TENANTRY_ENCRYPTION_KEY changed?). "
    "Rotate its secret to send again."
)
_CLAIMED_COLUMNS = (
    _DELIVERY.id,
    _DELIVERY.org_id,
    _DELIVERY.endpoint_id,
    _DELIVERY.event_id,
    _DELIVERY.payload,
    _DELIVERY.attempt_count,
    _DELIVERY.is_one_shot,
    _DELIVERY.next_attempt_at,
)
# Hinted deliveries leased by id: those still due, unleased and of an enabled endpoint. The endpoint is checked
# row by row (EXISTS): given ``endpoint_id IN (enabled endpoints)`` instead, SQLite planned the whole statement
# on an index of the endpoint (one lookup per endpoint and id) or on the due index (every due delivery read),
# rather than on the ids' own key.
_LEASE_BY_ID = Listing(
    lambda ids: (
        update(Delivery.__table__)  # type: ignore[arg-type]
        .where(
            _DELIVERY.id.in_(ids),
            _DELIVERY.status == PENDING,
            _DELIVERY.next_attempt_at <= bindparam("b_now"),
            or_(_DELIVERY.locked_until.is_(None), _DELIVERY.locked_until < bindparam("b_now")),
            select(Endpoint.id).where(Endpoint.id == _DELIVERY.endpoint_id, Endpoint.is_enabled.is_(True)).exists(),
        )
        .values(locked_by=bindparam("b_owner"), locked_until=bindparam("b_until"))
        .returning(_DELIVERY.id, _DELIVERY.attempt_count, _DELIVERY.next_attempt_at)
    ),
    _DELIVERY.id.type,
    ("b_now", "b_owner", "b_until"),
)
_ENDPOINT = Endpoint.__table__.c
_ENDPOINTS_BY_ID = Listing(
    lambda ids: select(*ENDPOINT_ROW_COLUMNS).where(_ENDPOINT.id.in_(ids)),
    _ENDPOINT.id.type,
    row=EndpointRow._make,
)


def _due(now: datetime, *, full: Sequence[uuid.UUID]) -> Any:
    """Pending deliveries due by ``now`` and not leased, except those of the endpoints that are ``full`` here."""
    condition = and_(
        Delivery.status == _PENDING,  # written out, as the due index's condition is
        Delivery.next_attempt_at <= now,
        or_(Delivery.locked_until.is_(None), Delivery.locked_until < now),
    )
    return and_(condition, Delivery.endpoint_id.not_in(full)) if full else condition


def _claimable(due: Any, limit: int) -> Any:
    """Up to ``limit`` deliveries meeting ``due`` (``_due``) of enabled endpoints, the longest due first."""
    return (
        select(Delivery.id, Delivery.endpoint_id)
        .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
        .where(due, Endpoint.is_enabled.is_(True))
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
        .with_for_update(of=Delivery, skip_locked=True)
    )


class Deliverer:
    """Sends held deliveries until stopped; ``drain`` sends everything due and returns (tests, ``worker --once``)."""

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
        self.targets = Targets(sealer, config.endpoint_ttl)
        self.ledger = Ledger(db, config=config, node_id=node_id, targets=self.targets)
        self._claiming = 0  # room a claim in progress may fill
        self._backlog = False  # whether the last claim found due deliveries (there may be more)
        self._quiet_until = 0.0  # monotonic: after a claim that found nothing, finished requests don't claim till then
        self._quiet_wake: asyncio.TimerHandle | None = None  # the wake put off to the end of that quiet window
        self._hints: dict[uuid.UUID, deque[Job]] = {}  # endpoint -> fresh deliveries left unleased, oldest first
        self._hinted = 0  # how many, and their bodies' bytes
        self._hinted_bytes = 0
        self._full_claim_at = 0.0  # monotonic: a claim by query is due then, even with hints in hand (retries wait)
        self.deadlines = Deadlines(config.timeout)
        self.senders = Senders(
            concurrency=config.concurrency,
            per_endpoint=config.per_endpoint,
            timeout=config.timeout,
            deliver=self._deliver,
            hand_back=self._hand_back,
            released=self._released,
        )
        self._wake = asyncio.Event()
        self._accepting = False  # whether the fan-out may hand deliveries over (a loop is there to send them)
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        """Look for due deliveries now (called after commits that made some due)."""
        self._wake.set()

    def request_stop(self) -> None:
        self._stopping = True
        self._accepting = False
        self._forget_hints()
        self._wake.set()

    # -- hints ---------------------------------------------------------------------------------------

    def hint_room(self) -> int:
        """How many more fresh deliveries the fan-out may leave here as hints."""
        if not self._accepting or self._hinted_bytes >= HINT_BYTES:
            return 0
        return HINTS - self._hinted

    def hint(self, jobs: Iterable[Job]) -> None:
        """Remember fresh deliveries that were written unleased (committed), to lease by id when there is room."""
        if not self._accepting:
            return
        if not self._hints:  # hints go first, for a poll interval at most: then a claim lets retries in
            self._full_claim_at = time.monotonic() + self.config.poll_interval
        for job in jobs:
            self._hints.setdefault(job[1].id, deque()).append(job)
            self._hinted += 1
            self._hinted_bytes += len(job[0].payload)

    def _forget_hints(self) -> None:
        self._hints.clear()
        self._hinted = self._hinted_bytes = 0

    def _pick_hints(self, room: int) -> list[Job]:
        """Hints taken out for a lease, oldest first per endpoint, none beyond an endpoint's room."""
        picked: list[Job] = []
        for endpoint_id in list(self._hints):
            hints = self._hints[endpoint_id]
            for _ in range(min(self._room(endpoint_id), room - len(picked), len(hints))):
                job = hints.popleft()
                self._hinted -= 1
                self._hinted_bytes -= len(job[0].payload)
                picked.append(job)
            if not hints:
                del self._hints[endpoint_id]
            if len(picked) >= room:
                break
        return picked

    # -- capacity ------------------------------------------------------------------------------------

    def room(self, endpoint_id: uuid.UUID | None = None) -> int:
        """How many more deliveries this process takes on now (for ``endpoint_id``: to that endpoint), a
        claim in progress counted as full."""
        return self._room(endpoint_id, reserved=self._claiming)

    def _room(self, endpoint_id: uuid.UUID | None, *, reserved: int = 0) -> int:
        if not self._accepting:
            return 0
        senders = self.senders
        overall = 2 * self.config.concurrency - senders.in_flight - senders.queued - reserved
        if endpoint_id is None:
            return overall
        return min(overall, 2 * self.config.per_endpoint - senders.held(endpoint_id))

    def take(self, jobs: Iterable[Job]) -> None:
        """Hold ``jobs`` (already leased to this process) and start those whose endpoint has a free slot."""
        if self._stopping:  # leased by a fan-out that committed as the stop began: due again, for whoever claims
            for job in jobs:
                self._hand_back(job)
            return
        self.senders.hold(jobs)

    def _hand_back(self, job: Job) -> None:
        """Give up a held delivery unsent: due again now, for whoever claims it."""
        self.ledger.record(Result(*job, None))

    def _released(self, endpoint_id: uuid.UUID) -> None:
        """One of ``endpoint_id``'s requests is done."""
        if self.senders.queued_for(endpoint_id) < self.config.per_endpoint:
            # Its queue runs low: claim more while the ones in flight finish. After a claim that found nothing,
            # not at every finished request (each claim is a query): new work wakes the loop itself (a fan-out,
            # a retry by hand), and what a full endpoint kept out of that claim is looked for once that quiet
            # window ends (if the last request finishes within it, nothing else would look before the poll).
            quiet = self._quiet_until - time.monotonic()
            if self._backlog or self._hints or quiet <= 0:
                self._wake.set()
            elif self._quiet_wake is None:
                self._quiet_wake = asyncio.get_running_loop().call_later(quiet, self._end_quiet)

    def _end_quiet(self) -> None:
        self._quiet_wake = None
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=make_connector(
                    allow_private=self.config.allow_private, limit=self.config.concurrency, resolver=self.resolver
                ),
                # One process serves every tenant: no cookie set by one receiver may reach another's.
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),  # bounded by ``self.deadlines`` in send()
                auto_decompress=False,
                trust_env=False,  # no proxy from the environment between us and the address we checked
            )
        return self._session

    async def run(self) -> None:
        """Deliver until ``request_stop``; then finish the requests in flight and write their results."""
        self._accepting = True
        flusher = asyncio.create_task(self._flush_forever(), name="webhooks.flush")
        try:
            while not self._stopping:
                try:
                    claimed = await self.claim()
                except Exception:
                    log.exception("webhooks.claim_failed")
                    claimed = 0
                if not claimed and not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.config.poll_interval):
                            await self._wake.wait()
                    self._wake.clear()
        finally:
            await self._finish(flusher)

    async def drain(self) -> int:
        """Send every due delivery (and the retries that fall due meanwhile), write every result, and say
        how many were claimed."""
        accepting, self._accepting = self._accepting, True
        claimed = 0
        try:
            while True:
                found = await self.claim()
                claimed += found
                if not found and not self.senders.in_flight and not self.senders.queued:
                    break
                if self.senders.in_flight:
                    await self.senders.until_done()
            await self.ledger.flush()
        finally:
            self._accepting = accepting
        return claimed

    async def close(self) -> None:
        await self.senders.dismiss()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _finish(self, flusher: asyncio.Task[None]) -> None:
        self._forget_hints()
        if self._quiet_wake is not None:
            self._quiet_wake.cancel()
            self._quiet_wake = None
        for job in self.senders.unstarted():  # held but not started: handed back
            self._hand_back(job)
        while self.senders.in_flight:
            await self.senders.until_done()
        await self.senders.dismiss()  # idle, every one of them, now
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        with contextlib.suppress(Exception):  # leases run out if this fails: the next process resends
            await self.ledger.flush()

    async def _flush_forever(self) -> None:
        while True:
            # Asleep while nothing is sent: an idle process is not woken fifty times a second for nothing.
            await self.ledger.wait()
            await asyncio.sleep(self.config.flush_interval)  # the results of the moment after go in the same write
            try:
                await self.ledger.flush()
            except Exception:
                # Kept for the next round (the database may be restarting); leases cover the wait.
                log.exception("webhooks.flush_failed", pending=len(self.ledger))
                await asyncio.sleep(1.0)

    # -- claiming ------------------------------------------------------------------------------------

    async def claim(self) -> int:
        """Claim due deliveries, as many as there is room for; returns how many."""
        # No more than one endpoint could take at once: rows read beyond what their endpoints have room
        # for are read for nothing (a backlog of one endpoint would fill every claim).
        room = min(self._room(None), 2 * self.config.per_endpoint)
        if room <= 0:
            return 0
        self._claiming = room  # the fan-out, meanwhile, must not count on this room too
        try:
            jobs: list[Job] = []
            if self._hints and time.monotonic() < self._full_claim_at:
                jobs = await self.unscoped_lease_hinted(room)
            if not jobs:
                self._full_claim_at = time.monotonic() + self.config.poll_interval
                jobs = await self.unscoped_claim(room)
        finally:
            self._claiming = 0
        self._backlog = bool(jobs)
        if not jobs:
            self._quiet_until = time.monotonic() + CLAIM_QUIET
        self.take(jobs)
        return len(jobs)

    def _due(self, now: datetime) -> Any:
        return _due(now, full=[e for e in self.senders.endpoints() if self._room(e) <= 0])

    async def unscoped_claim(self, limit: int) -> list[Job]:
        """Lease up to ``limit`` due deliveries of enabled endpoints, none beyond an endpoint's room. Crosses
        organizations (one queue for all), hence unscoped."""
        now, lease_ends = utcnow(), time.monotonic() + self.config.lease.total_seconds()
        due = self._due(now)
        if self.db.is_sqlite:  # one writer: look on the read pool first, take the write lock only for real work
            async with self.db.reader.connect() as connection:
                if (await connection.execute(select(Delivery.id).where(due).limit(1))).first() is None:
                    return []
        async with self.db.transaction() as tx:
            await scope.unscoped(tx)
            query = _claimable(due, limit)
            connection = await tx.connection()  # Core rows, without the ORM's result machinery
            ids = self._within_room((await connection.execute(query)).all())
            if not ids:
                return []
            lease = update(Delivery.__table__).where(_DELIVERY.id.in_(ids))  # type: ignore[arg-type]
            lease = lease.values(locked_by=self.node_id, locked_until=now + self.config.lease)
            # Rows unpacked by position, in ``_CLAIMED_COLUMNS`` order: a ``Row``'s attribute access costs far more.
            rows = (await connection.execute(lease.returning(*_CLAIMED_COLUMNS))).all()
            await self._refresh_targets(tx, {row[2] for row in rows}, now)
        jobs = []
        for delivery_id, org_id, endpoint_id, event_id, payload, attempt_count, is_one_shot, due_at in rows:
            target = self.targets.get(endpoint_id)
            if target is not None:  # (an endpoint deleted meanwhile: its lease runs out with it)
                claimed = Claimed(
                    delivery_id,
                    org_id,
                    endpoint_id,
                    event_id,
                    payload.encode(),
                    attempt_count,
                    is_one_shot,
                    due_at,
                    lease_ends,
                )
                jobs.append((claimed, target))
        return jobs

    async def unscoped_lease_hinted(self, limit: int) -> list[Job]:
        """Lease up to ``limit`` hinted deliveries by id: those still due, unleased and of an enabled endpoint
        (another process may have claimed some meanwhile, or their endpoint been disabled: those are dropped).
        Crosses organizations, hence unscoped."""
        hinted = self._pick_hints(limit)
        if not hinted:
            return []
        now, lease_ends = utcnow(), time.monotonic() + self.config.lease.total_seconds()
        by_id = {job[0].id: job for job in hinted}
        endpoints = {job[1].id for job in hinted}  # a delivery's endpoint never changes: the hint's is the row's
        async with self.db.direct() as tx:
            await scope.unscoped(tx)
            # One order for every process: no deadlock between two leases.
            rows = await _LEASE_BY_ID.rows(tx, sorted(by_id), now, self.node_id, now + self.config.lease)
            await self._refresh_targets(tx, endpoints, now)
        fresh = {endpoint_id: self.targets.get(endpoint_id) for endpoint_id in endpoints}
        jobs = []
        for delivery_id, attempt_count, due_at in rows:  # by position, as in ``returning``
            delivery = by_id[delivery_id][0]
            target = fresh[delivery.endpoint_id]
            if target is not None:  # (an endpoint deleted meanwhile: its lease runs out with it)
                delivery.attempt_count = attempt_count  # (attempted and due again since it was written?)
                delivery.due_at = due_at
                delivery.lease_ends = lease_ends
                jobs.append((delivery, target))
        return jobs

    async def _refresh_targets(self, tx: Lane, endpoint_ids: set[uuid.UUID], now: datetime) -> None:
        """Read the endpoints among ``endpoint_ids`` whose settings were read too long ago."""
        wanted = [e for e in endpoint_ids if self.targets.get(e) is None]
        for endpoint in await _ENDPOINTS_BY_ID.rows(tx, wanted):
            self.targets.put(endpoint, now)

    def _within_room(self, candidates: Sequence[Any]) -> list[uuid.UUID]:
        taken: dict[uuid.UUID, int] = {}
        ids = []
        for delivery_id, endpoint_id in candidates:
            if taken.get(endpoint_id, 0) < self._room(endpoint_id):
                taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
                ids.append(delivery_id)
        return ids

    # -- sending -------------------------------------------------------------------------------------

    async def _deliver(self, job: Job) -> None:
        delivery, target = job
        while target.rate_limit and (wait := await self._rate_wait(target)) > 0:
            # Not worth holding a slot for, or the turn would come too late for a request to end within the
            # lease (another process could claim and send it meanwhile): hand it back, due when the limit allows.
            # Stopping, it is handed back too: the stop waits for requests in flight, not for turns to come.
            if (
                wait > 1.0
                or self._stopping
                or time.monotonic() + wait + self.config.timeout + 2.0 > delivery.lease_ends
            ):
                self.ledger.record(Result(delivery, target, None, postpone=wait))
                return
            await asyncio.sleep(wait)  # then ask again: others waiting beside it may take the turn
        if target.signer:
            request = Request(target.url, str(delivery.event_id), delivery.payload, target.signer, target.headers)
            outcome = await send(self.session, request, deadlines=self.deadlines, body_limit=self.config.body_limit)
        else:  # nothing to sign with: an attempt that fails without a request, logged and retried
            outcome = Outcome(utcnow(), None, 0, error=UNSIGNABLE)
        LAGS.observe(max(0.0, (outcome.at - delivery.due_at).total_seconds()))  # ``at``: when the attempt started
        self.ledger.record(Result(delivery, target, outcome))

    async def _rate_wait(self, target: Target) -> float:
        """Seconds until the endpoint's rate limit lets one more request through (0: go now)."""
        assert target.rate_limit is not None
        rate = Rate(limit=target.rate_limit, period=1.0, burst=target.rate_limit)
        decision = await self.limiter.hit(f"webhooks:{target.id}", rate, policy="webhooks.endpoint")
        return 0.0 if decision.allowed else max(decision.retry_after, 0.001)
