"""Webhook endpoints of an organization, their secrets, and the log and replay of their deliveries.

Every method authorizes the caller in the organization first (``webhooks.read`` or
``webhooks.manage``) and scopes its transaction to it: another organization's endpoint is a 404.
Secrets are sealed at rest, bound to their endpoint; they are shown to ``webhooks.manage`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.errors import InvalidInput, NotFound
from tenantry.core.ids import new_id
from tenantry.db import scope
from tenantry.db.engine import Database
from tenantry.events.catalog import EVENT_TYPES, EventType
from tenantry.events.outbox import emit
from tenantry.identity.sealing import Sealer
from tenantry.tenancy.policy import Caller, Policy
from tenantry.tenancy.views import Page, uuid_cursor
from tenantry.webhooks import addresses
from tenantry.webhooks.errors import EndpointDisabled, UnsafeUrl
from tenantry.webhooks.events import (
    ENDPOINT_CREATED,
    ENDPOINT_DELETED,
    ENDPOINT_SECRET_ROTATED,
    ENDPOINT_UPDATED,
    WEBHOOK_TEST,
)
from tenantry.webhooks.fanout import WOKEN
from tenantry.webhooks.models import FAILED, PENDING, Attempt, Delivery, Endpoint
from tenantry.webhooks.signing import new_secret

LISTED_BODY = 1024  # characters of each answer a page of deliveries shows (one delivery: all that was kept)
DNS_TIMEOUT = 5.0  # seconds a registration waits for its URL's name to resolve
ROTATION_OVERLAP = timedelta(hours=24)  # a rotated-out secret keeps signing beside the new one this long
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an HTTP header name (RFC 9110 token)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # never in a header value (RFC 9110 5.5); aiohttp refuses them
# Ours to set, or the transport's: an endpoint's own headers may not replace them.
_RESERVED = {
    "content-type", "content-length", "content-encoding", "host", "user-agent", "connection", "keep-alive",
    "transfer-encoding", "te", "trailer", "upgrade", "expect", "cookie", "proxy-authorization",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class EndpointView:
    id: uuid.UUID
    url: str
    description: str
    event_types: list[str] | None
    headers: dict[str, str]
    rate_limit: int | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    view: EndpointView
    secret: str  # shown at creation, and to webhooks.manage on request


@dataclass(frozen=True, slots=True)
class AttemptView:
    at: datetime
    response_status: int | None
    duration_ms: int
    error: str | None
    response_body: str | None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: str
    attempts: list[AttemptView]
    next_attempt_at: datetime | None
    created_at: datetime


Recent = list[tuple[str, DeliveryView]]  # (the endpoint's URL, a delivery to it)


REDACTED = "[redacted]"


def _view(row: Endpoint, *, reveal: bool = True) -> EndpointView:
    """The endpoint as shown; its headers' values (often credentials for the receiver) only to those who
    may manage it, like its secret."""
    headers = dict(row.headers or {})
    return EndpointView(
        row.id,
        row.url,
        row.description,
        row.event_types,
        headers if reveal else dict.fromkeys(headers, REDACTED),
        row.rate_limit,
        row.is_enabled,
        row.disabled_reason,
        row.created_at,
        row.updated_at,
    )


def _change(row: Endpoint) -> dict[str, Any]:
    endpoint = {
        "id": str(row.id),
        "url": row.url,
        "description": row.description,
        "event_types": row.event_types,
        "enabled": row.is_enabled,
    }
    return {"endpoint": endpoint, "target": {"type": "endpoint", "id": str(row.id)}}


def _event_types(names: Sequence[str] | None) -> list[str] | None:
    if names is None:
        return None
    unknown = sorted(set(names) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(
            f"Unknown event types: {', '.join(unknown)} (see GET /v1/webhooks/event-types).", field="event_types"
        )
    personal = sorted(n for n in names if EVENT_TYPES[n].scope != "organization")
    if personal:
        raise InvalidInput(
            f"{', '.join(personal)}: these are about a user across organizations, and no organization's "
            "endpoint is sent them.",
            field="event_types",
        )
    return sorted(set(names))


def _headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        lowered = name.lower()
        if not _TOKEN.match(name) or lowered in _RESERVED or lowered.startswith(("webhook-", "proxy-")):
            raise InvalidInput(f"The header {name!r} cannot be set on an endpoint.", field="headers")
        if _CONTROL.search(value):
            raise InvalidInput(f"The value of {name!r} holds a control character (a line break, say).", field="headers")
    return dict(headers)


class WebhookService:
    def __init__(
        self,
        *,
        db: Database,
        policy: Policy,
        sealer: Sealer,
        require_https: bool,
        allow_private: bool,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        self.db = db
        self.policy = policy
        self.sealer = sealer
        self.require_https = require_https
        self.allow_private = allow_private
        self.resolver = resolver

    @staticmethod
    def event_types() -> list[EventType]:
        """Every event the platform emits, with the JSON Schema of its data, by name."""
        return sorted(EVENT_TYPES.values(), key=lambda t: t.name)

    async def _safe_url(self, url: str, *, caller: Caller, org_id: uuid.UUID) -> str:
        """The URL, once it is allowed to receive webhooks. Raises ``NotFound``, ``Forbidden`` (asked first:
        a stranger gets no DNS lookup done for them), ``UnsafeUrl``."""
        if self.policy.peek(caller, org_id, "webhooks.manage") is None:
            async with self.db.read() as tx:
                await self.policy.authorize(tx, caller, org_id, "webhooks.manage")
        try:
            url = addresses.validate_url(url, require_https=self.require_https, allow_private=self.allow_private)
        except addresses.UnsafeUrl as exc:
            raise UnsafeUrl(str(exc), field="url") from exc
        try:
            # A DNS server that does not answer must not hold the request: such a name is taken as one
            # that does not resolve yet (every delivery checks the address it connects to anyway).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DNS_TIMEOUT):
                    await addresses.ensure_public(url, allow_private=self.allow_private, resolver=self.resolver)
        except addresses.UnsafeUrl as exc:
            # Not which address: that would map the private names of our network for anyone who asks.
            detail = "Its host resolves to an address webhooks may not reach (private, loopback, or reserved)."
            raise UnsafeUrl(detail, field="url") from exc
        return url

    def _seal(self, endpoint_id: uuid.UUID, secret: str) -> str:
        return self.sealer.seal(secret.encode(), owner=endpoint_id.bytes)

    async def create(
        self,
        *,
        caller: Caller,
        org_id: uuid.UUID,
        url: str,
        event_types: list[str] | None,
        description: str,
        headers: dict[str, str],
        rate_limit: int | None,
    ) -> NewEndpoint:
        """Add an endpoint, enabled, with a fresh secret. Raises ``NotFound``, ``Forbidden``, ``UnsafeUrl``,
        ``InvalidInput``."""
        names, extra = _event_types(event_types), _headers(headers)
        url = await self._safe_url(url, caller=caller, org_id=org_id)
        secret = new_secret()
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "webhooks.manage")
            now = utcnow()
            row = Endpoint(
                id=new_id(),  # time-ordered: listings page oldest first
                org_id=org_id,
                url=url,
                description=description,
                event_types=names,
                headers=extra,
                rate_limit=rate_limit,
                is_enabled=True,
                created_at=now,
                updated_at=now,
            )
            row.secret = self._seal(row.id, secret)
            tx.add(row)
            await tx.flush()
            await emit(tx, ENDPOINT_CREATED, data=_change(row), actor=caller.actor, org_id=org_id)
        return NewEndpoint(_view(row), secret)

    async def list(self, *, caller: Caller, org_id: uuid.UUID, cursor: str | None, limit: int) -> Page[EndpointView]:
        """The organization's endpoints, oldest first. Raises ``NotFound``, ``Forbidden``."""
        after = uuid_cursor(cursor)
        async with self.db.read() as tx:
            access = await self.policy.authorize(tx, caller, org_id, "webhooks.read")
            query = select(Endpoint).where(Endpoint.org_id == org_id)
            if after is not None:
                query = query.where(Endpoint.id > after)
            rows = list((await tx.scalars(query.order_by(Endpoint.id).limit(limit + 1))).all())
        reveal = access.can("webhooks.manage")
        views = [_view(r, reveal=reveal) for r in rows[:limit]]
        return Page(views, str(rows[limit - 1].id) if len(rows) > limit else None)

    async def get(self, *, caller: Caller, org_id: uuid.UUID, endpoint_id: uuid.UUID) -> EndpointView:
        """One endpoint, without its secret. Raises ``NotFound``, ``Forbidden``."""
        async with self.db.read() as tx:
            access = await self.policy.authorize(tx, caller, org_id, "webhooks.read")
            return _view(await _endpoint(tx, org_id, endpoint_id), reveal=access.can("webhooks.manage"))

    async def update(
        self, *, caller: Caller, org_id: uuid.UUID, endpoint_id: uuid.UUID, changes: dict[str, Any]
    ) -> EndpointView:
        """Change what ``changes`` names (url, event_types, description, headers, rate_limit, enabled).
        Raises ``NotFound``, ``Forbidden``, ``UnsafeUrl``, ``InvalidInput``."""
        if "url" in changes:
            changes["url"] = await self._safe_url(changes["url"], caller=caller, org_id=org_id)
        if "event_types" in changes:
            changes["event_types"] = _event_types(changes["event_types"])
        if "headers" in changes:
            changes["headers"] = _headers(changes["headers"] or {})
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "webhooks.manage")
            row = await _endpoint(tx, org_id, endpoint_id)
            enabled = changes.pop("enabled", None)
            for name, value in changes.items():
                setattr(row, name, value)
            if enabled is not None and enabled != row.is_enabled:
                row.is_enabled, row.disabled_reason, row.failing_since = enabled, None if enabled else "manual", None
                tx.info[WOKEN] = True  # re-enabled: its paused deliveries are due again
            row.updated_at = utcnow()
            await tx.flush()
            await emit(tx, ENDPOINT_UPDATED, data=_change(row), actor=caller.actor, org_id=org_id)
            return _view(row)

    async def delete(self, *, caller: Caller, org_id: uuid.UUID, endpoint_id: uuid.UUID) -> None:
        """Remove an endpoint with its deliveries and their log. Raises ``NotFound``, ``Forbidden``."""
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "webhooks.manage")
            row = await _endpoint(tx, org_id, endpoint_id)
            data = _change(row)
            await tx.delete(row)
            await emit(tx, ENDPOINT_DELETED, data=data, actor=caller.actor, org_id=org_id)

    async def secret(self, *, caller: Caller, org_id: uuid.UUID, endpoint_id: uuid.UUID) -> str:
        """The endpoint's current signing secret. Raises ``NotFound``, ``Forbidden``."""
        async with self.db.read() as tx:
            await self.policy.authorize(tx, caller, org_id, "webhooks.manage")
            row = await _endpoint(tx, org_id, endpoint_id)
        return self.sealer.open(row.secret, owner=row.id.bytes).decode()

    async def rotate_secret(self, *, caller: Caller, org_id: uuid.UUID, endpoint_id: uuid.UUID) -> str:
        """A new secret; the current one keeps signing beside it for 24 hours, so receivers can switch
        without losing a request. Raises ``NotFound``, ``Forbidden``."""
        secret = new_secret()
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "webhooks.manage")
            row = await _endpoint(tx, org_id, endpoint_id)
            now = utcnow()
            row.previous_secret, row.previous_secret_expires_at = row.secret, now + ROTATION_OVERLAP
            row.secret = self._seal(row.id, secret)
            row.updated_at = now
            await tx.flush()
            await emit(tx, ENDPOINT_SECRET_ROTATED, data=_change(row), actor=caller.actor, org_id=org_id)
        return secret

    async def send_test(self, *, caller: Caller, org_id: uuid.UUID, endpoint_id: uuid.UUID) -> uuid.UUID:
        """Send a ``webhook.test`` event to this endpoint alone; returns the event id (its ``webhook-id``).
        Raises ``NotFound``, ``Forbidden``, ``EndpointDisabled``."""
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "webhooks.manage")
            row = await _endpoint(tx, org_id, endpoint_id)
            if not row.is_enabled:
                raise EndpointDisabled()
            data = {"endpoint_id": str(row.id), "message": "A test event from Tenantry."}
            return await emit(tx, WEBHOOK_TEST, data=data, actor=caller.actor, org_id=org_id)

    async def deliveries(
        self,
        *,
        caller: Caller,
        org_id: uuid.UUID,
        endpoint_id: uuid.UUID,
        status: str | None,
        cursor: str | None,
        limit: int,
    ) -> Page[DeliveryView]:
        """The endpoint's deliveries, newest first, each with its attempts. Raises ``NotFound``, ``Forbidden``."""
        before = uuid_cursor(cursor)
        async with self.db.read() as tx:
            await self.policy.authorize(tx, caller, org_id, "webhooks.read")
            await _endpoint(tx, org_id, endpoint_id)
            query = select(Delivery).where(Delivery.org_id == org_id, Delivery.endpoint_id == endpoint_id)
            if status is not None:
                query = query.where(Delivery.status == status)
            if before is not None:
                query = query.where(Delivery.id < before)
            rows = list((await tx.scalars(query.order_by(Delivery.id.desc()).limit(limit + 1))).all())
            views = await _with_attempts(tx, org_id, rows[:limit], body_limit=LISTED_BODY)
        return Page(views, str(rows[limit - 1].id) if len(rows) > limit else None)

    async def delivery(
        self, *, caller: Caller, org_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
    ) -> DeliveryView:
        """One delivery with its attempts, their answers as kept (up to 64 KiB each). Raises ``NotFound``,
        ``Forbidden``."""
        async with self.db.read() as tx:
            await self.policy.authorize(tx, caller, org_id, "webhooks.read")
            row = await tx.get(Delivery, delivery_id)
            if row is None or row.org_id != org_id or row.endpoint_id != endpoint_id:
                raise NotFound("No such delivery.")
            (view,) = await _with_attempts(tx, org_id, [row])
        return view

    async def recent_for_operator(self, *, org_id: uuid.UUID, status: str | None, limit: int) -> Recent:
        """The organization's newest deliveries to any endpoint, with the endpoint's URL, for an operator at
        the command line (who holds the machine, not a membership)."""
        async with self.db.read() as tx:
            await scope.to_org(tx, org_id)
            query = (
                select(Delivery, Endpoint.url)
                .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                .where(Delivery.org_id == org_id)
            )
            if status is not None:
                query = query.where(Delivery.status == status)
            found = (await tx.execute(query.order_by(Delivery.id.desc()).limit(limit))).all()
            views = await _with_attempts(tx, org_id, [row for row, _ in found])
        return [(url, view) for (_, url), view in zip(found, views, strict=True)]

    async def retry(self, *, caller: Caller, org_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> None:
        """One more attempt of a delivery, now. Raises ``NotFound``, ``Forbidden``, ``EndpointDisabled``."""
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "webhooks.manage")
            endpoint = await _endpoint(tx, org_id, endpoint_id)
            if not endpoint.is_enabled:
                raise EndpointDisabled()
            row = await tx.get(Delivery, delivery_id)
            if row is None or row.org_id != org_id or row.endpoint_id != endpoint_id:
                raise NotFound("No such delivery.")
            if row.status != PENDING:  # a finished delivery gets one attempt; a pending one just goes sooner
                row.status, row.is_one_shot, row.finished_at = PENDING, True, None
            row.next_attempt_at = utcnow()
            tx.info[WOKEN] = True

    async def recover(self, *, caller: Caller, org_id: uuid.UUID, endpoint_id: uuid.UUID, since: datetime) -> int:
        """Send again every delivery to this endpoint that failed and was made since ``since``; returns how
        many. Raises ``NotFound``, ``Forbidden``, ``EndpointDisabled``, ``InvalidInput``."""
        now = utcnow()
        if since > now:
            raise InvalidInput("`since` is in the future.", field="since")
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "webhooks.manage")
            endpoint = await _endpoint(tx, org_id, endpoint_id)
            if not endpoint.is_enabled:
                raise EndpointDisabled()
            result = await tx.execute(
                update(Delivery)
                .where(
                    Delivery.org_id == org_id,
                    Delivery.endpoint_id == endpoint_id,
                    Delivery.status == FAILED,
                    Delivery.created_at >= since,
                )
                .values(status=PENDING, is_one_shot=True, finished_at=None, next_attempt_at=now)
                .execution_options(synchronize_session=False)
            )
            tx.info[WOKEN] = True
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _with_attempts(
    tx: AsyncSession, org_id: uuid.UUID, rows: Sequence[Delivery], *, body_limit: int | None = None
) -> list[DeliveryView]:
    """Deliveries as shown, each with its attempts, oldest first (one query for all of them), answers cut at
    ``body_limit`` characters."""
    attempts: dict[uuid.UUID, list[AttemptView]] = {row.id: [] for row in rows}
    if rows:
        query = select(Attempt).where(Attempt.org_id == org_id, Attempt.delivery_id.in_(list(attempts)))
        for a in await tx.scalars(query.order_by(Attempt.at)):
            attempts[a.delivery_id].append(
                AttemptView(a.at, a.response_status, a.duration_ms, a.error, _cut(a.response_body, body_limit))
            )
    return [
        DeliveryView(r.id, r.event_id, r.event_type, r.status, attempts[r.id], r.next_attempt_at, r.created_at)
        for r in rows
    ]


def _cut(text: str | None, limit: int | None) -> str | None:
    return text if text is None or limit is None or len(text) <= limit else text[:limit] + "…"


async def _endpoint(tx: AsyncSession, org_id: uuid.UUID, endpoint_id: uuid.UUID) -> Endpoint:
    row: Endpoint | None = await tx.get(Endpoint, endpoint_id)
    if row is None or row.org_id != org_id:
        raise NotFound("No such webhook endpoint.")
    return row
