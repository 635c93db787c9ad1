"""Rate limits on every door: a pure ASGI middleware applying ``tenantry.ratelimit.policies``.

Each limited response carries ``RateLimit-Policy`` and ``RateLimit`` (IETF draft-ietf-httpapi-
ratelimit-headers) for every policy that counted it; a refused one is 429 problem+json
``too_many_requests`` with ``Retry-After``. Subjects: the client address (``X-Forwarded-For`` only
from ``TENANTRY_TRUSTED_PROXIES``), the principal (the user an access token names, whichever session,
or the API key), and the organization a path names.
"""

from __future__ import annotations

import asyncio
import functools
import math
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tenantry.core.ids import digest
from tenantry.http.client_ip import client_ip
from tenantry.http.middleware import EXTRA_HEADERS
from tenantry.http.problems import problem
from tenantry.ratelimit.concurrency import ConcurrencyStore, Lease
from tenantry.ratelimit.gcra import Decision, Rate
from tenantry.ratelimit.limiter import LimiterUnavailable
from tenantry.ratelimit.policies import LimitPolicy, Subject, org_in_path, route_group
from tenantry.ratelimit.shedding import Priority

if TYPE_CHECKING:
    from tenantry.platform import Platform

API_KEY_PREFIX = "tnt_"
LEASE_TTL = 60.0  # an in-flight slot held by a process that died frees itself after this
# Who is shed first when the process is saturated: the console's pages, then the API; health never.
PRIORITIES = {"console": Priority.LOW, "api": Priority.NORMAL, "auth": Priority.NORMAL, "login": Priority.NORMAL}
Applied = list[tuple[LimitPolicy, Rate, Decision]]


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name: value for name, value in scope["headers"] if name in (b"authorization", b"x-forwarded-for")}


def _principal(platform: Platform, authorization: bytes | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    if token.startswith(API_KEY_PREFIX):
        return "key:" + digest(token)[:32]  # a made-up key spends only its own budget, and the IP's
    user = platform.auth.user_key(token)
    return f"user:{user}" if user else None


@functools.lru_cache(maxsize=256)
def _policy_header(policies: tuple[tuple[str, int, float], ...]) -> bytes:
    return ", ".join(f'"{name}";q={limit};w={math.ceil(period)}' for name, limit, period in policies).encode()


def rate_limit_headers(applied: Applied) -> list[tuple[bytes, bytes]]:
    policies = _policy_header(tuple((p.name, r.limit, r.period) for p, r, _ in applied))
    states = ", ".join(
        f'"{p.name}";r={d.remaining};t={math.ceil(d.retry_after if not d.allowed else d.reset_after)}'
        for p, _, d in applied
    )
    return [(b"ratelimit-policy", policies), (b"ratelimit", states.encode())]


async def _acquire(platform: Platform, principal: str | None) -> tuple[ConcurrencyStore, Lease] | None:
    """A lease on one of the principal's in-flight slots; with Redis down, a per-process one."""
    if principal is None:
        return None
    limit = platform.settings.concurrent_requests_per_principal
    try:
        return platform.concurrency, await platform.concurrency.acquire(principal, limit=limit, ttl=LEASE_TTL)
    except RedisError:
        store = platform.local_concurrency
        return store, await store.acquire(principal, limit=limit, ttl=LEASE_TTL)


async def _release(store: ConcurrencyStore, lease: Lease) -> None:
    try:
        await store.release(lease)
    except RedisError:  # the lease expires by itself
        return


def _refuse(
    status: int, code: str, title: str, detail: str, *, wait: int = 1, extra: list[tuple[bytes, bytes]] | None = None
) -> Response:
    response = problem(status, code, title, detail, headers={"Retry-After": str(wait)})
    response.raw_headers.extend(extra or [])
    return response


class RateLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("app")
        platform: Platform | None = getattr(app.state, "platform", None) if app is not None else None
        group = route_group(scope.get("method", ""), scope.get("path", "")) if scope["type"] == "http" else None
        if platform is None or group is None or not platform.rate_limits.enabled:
            await self.app(scope, receive, send)
            return
        if not platform.shedder.admit(PRIORITIES[group]):
            await _refuse(503, "overloaded", "Overloaded", "The server is overloaded; try again shortly.")(
                scope, receive, send
            )
            return
        plan, principal = _plan(platform, scope, group)
        cost = platform.rate_limits.cost(scope["method"], scope["path"])
        lease: tuple[ConcurrencyStore, Lease] | None = None
        try:
            if platform.batcher is None:
                applied, refused = await _judge_in_turn(platform, plan, cost)
            else:
                applied, refused, lease = await _judge_together(platform, plan, cost, principal)
        except LimiterUnavailable as exc:
            await _refuse(503, exc.code, exc.title, exc.detail)(scope, receive, send)
            return
        extra = rate_limit_headers(applied) if applied else []
        if refused is not None:
            if lease is not None:
                await _release(*lease)
            wait = max(1, math.ceil(refused.retry_after))
            detail = f"Slow down: try again in {wait} seconds."
            await _refuse(429, "too_many_requests", "Too many requests", detail, wait=wait, extra=extra)(
                scope, receive, send
            )
            return
        if platform.batcher is None:
            lease = await _acquire(platform, principal)
        if lease is not None and not lease[1].granted:
            detail = f"At most {lease[1].limit} requests at once per user or API key; wait for one to finish."
            await _refuse(429, "too_many_requests", "Too many requests at once", detail)(scope, receive, send)
            return

        scope[EXTRA_HEADERS] = extra  # RequestContext adds them as the response starts

        platform.shedder.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            platform.shedder.leave()
            if lease is not None:
                await _release(*lease)


Plan = list[tuple[LimitPolicy, Rate, str]]


def _plan(platform: Platform, scope: Scope, group: str) -> tuple[Plan, str | None]:
    """Which budgets this request spends: (policy, rate, key) for each policy of its group that can name
    a subject, and the principal (for the in-flight cap)."""
    headers = _headers(scope)
    peer = scope["client"][0] if scope.get("client") else None
    forwarded = headers.get(b"x-forwarded-for")
    ip = client_ip(peer, forwarded.decode("latin-1") if forwarded else None, platform.trusted_proxies)
    org = org_in_path(scope["path"])
    principal: str | None = None
    plan: Plan = []
    for policy in platform.rate_limits.for_group(group):
        if policy.by is Subject.PRINCIPAL:
            principal = _principal(platform, headers.get(b"authorization"))
            subject = principal
        else:
            subject = ip if policy.by is Subject.IP else (str(org) if org else None)
        if subject:
            plan_rate = platform.org_rates.rate_for(org, policy) if org and policy.by is Subject.ORG else None
            plan.append((policy, plan_rate or policy.rate, f"{policy.name}:{subject}"))
    return plan, principal


async def _judge(platform: Platform, policy: LimitPolicy, rate: Rate, key: str, cost: int) -> Decision:
    return await platform.limiter.hit(
        key, rate, cost=cost, fail_closed=policy.fail_closed, policy=policy.name, shadow=policy.shadow
    )


async def _judge_in_turn(platform: Platform, plan: Plan, cost: int) -> tuple[Applied, Decision | None]:
    """In process: one budget after another, stopping at the first refusal."""
    applied: Applied = []
    for policy, rate, key in plan:
        decision = await _judge(platform, policy, rate, key, cost)
        applied.append((policy, rate, decision))
        if not decision.allowed:
            return applied, decision
    return applied, None


async def _judge_together(
    platform: Platform, plan: Plan, cost: int, principal: str | None
) -> tuple[Applied, Decision | None, tuple[ConcurrencyStore, Lease] | None]:
    """On Redis: every budget and the in-flight lease at once, so they share one pipeline."""
    judging = asyncio.gather(*(_judge(platform, policy, rate, key, cost) for policy, rate, key in plan))
    decisions, lease = await asyncio.gather(judging, _acquire(platform, principal))
    applied: Applied = [(p, r, d) for (p, r, _), d in zip(plan, decisions, strict=True)]
    refused = next((d for d in decisions if not d.allowed), None)
    return applied, refused, lease
