"""What the deliverer works with: its settings, the endpoints as it sends to them, the deliveries it holds."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from tenantry.identity.sealing import Sealer, SealError
from tenantry.settings import Settings
from tenantry.webhooks.models import Endpoint, EndpointRow
from tenantry.webhooks.sending import Outcome
from tenantry.webhooks.signing import Signer, secret_key

log = structlog.get_logger(__name__)


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
    endpoint_ttl: float = 2.0  # an endpoint's settings as read are trusted this long (a URL change shows after it)

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
class Target:
    """An endpoint as the deliverer sends to it, its secrets opened."""

    id: uuid.UUID
    org_id: uuid.UUID
    url: str
    headers: dict[str, str]
    signer: Signer  # empty when the secret cannot be opened
    rate_limit: int | None
    failing_since: datetime | None


@dataclass(slots=True)
class Claimed:
    """A delivery this process holds the lease of."""

    id: uuid.UUID
    org_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    payload: bytes
    attempt_count: int
    is_one_shot: bool
    due_at: datetime
    lease_ends: float  # time.monotonic() when its lease runs out; not started this close to it, it is handed back


Job = tuple[Claimed, Target]


@dataclass(slots=True)
class Result:
    delivery: Claimed
    target: Target
    outcome: Outcome | None  # None: not sent (the endpoint's rate limit); ``postpone`` says for how long
    postpone: float = 0.0


@dataclass
class Targets:
    """Endpoints as last read, for ``endpoint_ttl`` seconds, with their secrets opened once per version."""

    sealer: Sealer
    ttl: float
    _fresh: dict[uuid.UUID, tuple[float, Target]] = field(default_factory=dict)
    _opened: dict[tuple[uuid.UUID, datetime], Signer] = field(default_factory=dict)

    def get(self, endpoint_id: uuid.UUID) -> Target | None:
        found = self._fresh.get(endpoint_id)
        return found[1] if found is not None and found[0] > time.monotonic() else None

    def put(self, row: Endpoint | EndpointRow, now: datetime) -> Target:
        """The endpoint ``row`` as a target, remembered for ``ttl`` seconds."""
        signer = self._signer(row, now)
        target = Target(row.id, row.org_id, row.url, dict(row.headers or {}), signer, row.rate_limit, row.failing_since)
        if len(self._fresh) > 10_000:
            self._fresh.clear()
        self._fresh[row.id] = (time.monotonic() + self.ttl, target)
        return target

    def forget(self, endpoint_id: uuid.UUID) -> None:
        self._fresh.pop(endpoint_id, None)

    def _signer(self, row: Endpoint | EndpointRow, now: datetime) -> Signer:
        """What signs with the endpoint's keys, or with none when its secret cannot be opened (sealed with another
        encryption key): then every attempt fails, logged, instead of one endpoint blocking the fan-out of all."""
        previous = (
            row.previous_secret if row.previous_secret_expires_at and row.previous_secret_expires_at > now else None
        )
        version = (row.id, row.updated_at)
        signer = self._opened.get(version)
        if signer is None or (previous is None and len(signer) > 1):  # the rotated-out secret has expired
            owner = row.id.bytes
            keys: tuple[bytes, ...]
            try:
                keys = (secret_key(self.sealer.open(row.secret, owner=owner).decode()),)
                if previous is not None:
                    keys += (secret_key(self.sealer.open(previous, owner=owner).decode()),)
            except (SealError, ValueError) as exc:
                log.error("webhooks.secret_unreadable", endpoint_id=str(row.id), error=str(exc))
                keys = ()
            signer = Signer(keys)
            if len(self._opened) > 10_000:
                self._opened.clear()
            self._opened[version] = signer
        return signer
