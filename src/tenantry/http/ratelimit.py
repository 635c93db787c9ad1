"""Rate limits on every door: a pure ASGI middleware applying ``tenantry.ratelimit.policies``.

Each limited response carries ``RateLimit-Policy`` and ``RateLimit`` (IETF draft-ietf-httpapi-
ratelimit-headers) for every policy that counted it; a refused one is 429 problem+json
``too_many_requests`` with ``Retry-After``. Subjects: the client address (``X-Forwarded-For`` only
from ``TENANTRY_TRUSTED_PROXIES``), the principal (the user an access token names, whichever session,
or the API key), and the organization a path names.

This runs before every limited request, so what can be worked out ahead is: once per platform, each
group's policies with their key prefixes and header fragments (:class:`_Limits`); once per kind of request
(the same method, path, address and credentials), which budgets it spends (:class:`_Plan`, looked up again
after a second, since a token expires and an organization's plan may change).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tenantry.core.ids import digest
from tenantry.http.client_ip import client_ip
from tenantry.http.middleware import EXTRA_HEADERS
from tenantry.http.problems import problem
from tenantry.ratelimit.admission import Admission, Budget, LocalAdmission, RedisAdmission, Ticket, Verdict
from tenantry.ratelimit.concurrency import MemoryConcurrency, RedisConcurrency
from tenantry.ratelimit.gcra import Rate
from tenantry.ratelimit.limiter import LimiterUnavailable
from tenantry.ratelimit.policies import UNLIMITED, LimitPolicy, Subject, org_in_path, route_group
from tenantry.ratelimit.shedding import Priority
from tenantry.ratelimit.store import MemoryStore, RedisStore

if TYPE_CHECKING:
    from tenantry.platform import Platform

API_KEY_PREFIX = "tnt_"
LEASE_TTL = 60.0  # an in-flight slot held by a process that died frees itself after this
# Who is shed first when the process is saturated: the console's pages, then the API; health never.
PRIORITIES = {"console": Priority.LOW, "api": Priority.NORMAL, "auth": Priority.NORMAL, "login": Priority.NORMAL}


@functools.lru_cache(maxsize=4096)
def _api_key_principal(token: str) -> str:
    return "key:" + digest(token)[:32]  # a made-up key spends only its own budget, and the IP's


def _principal(platform: Platform, authorization: bytes | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    if token.startswith(API_KEY_PREFIX):
        return _api_key_principal(token)
    user = platform.auth.user_key(token)
    return f"user:{user}" if user else None


@dataclass(frozen=True, slots=True)
class _Rule:
    """A policy at a rate, with what every request it counts needs of it, made once (per organization
    whose plan sets its own rate, per kind of request)."""

    policy: LimitPolicy
    rate: Rate
    prefix: str  # of its keys: "<policy>:<subject>"
    quota: bytes  # its RateLimit-Policy item
    state: bytes  # its RateLimit item, to fill with what remains and the seconds until reset

    @classmethod
    def of(cls, policy: LimitPolicy, rate: Rate | None = None) -> _Rule:
        rate = rate or policy.rate
        quota = f'"{policy.name}";q={rate.limit};w={math.ceil(rate.period)}'.encode()
        return cls(policy, rate, f"{policy.name}:", quota, f'"{policy.name}";r=%d;t=%d'.encode())


Headers = Sequence[tuple[bytes, bytes]]


@dataclass(slots=True, eq=False)
class _Plan:
    """What one kind of request spends: its admission ticket (its budgets, cost and principal), the rules
    its budgets come from, and its header values when every budget is judged."""

    priority: Priority
    ticket: Ticket
    rules: list[_Rule]
    quotas: bytes  # RateLimit-Policy
    states: bytes  # RateLimit, to fill with (remaining, reset) of each budget
    # Worked out once: how many values every budget judged tells, and the RateLimit-Policy header then.
    told_by_all: int = field(init=False)
    quota_header: tuple[bytes, bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.told_by_all = 2 * len(self.rules)
        self.quota_header = (b"ratelimit-policy", self.quotas)

    def headers(self, told: list[int]) -> Headers:
        """``RateLimit-Policy`` and ``RateLimit`` for the budgets judged (a refusal stops the judging early)."""
        if len(told) == self.told_by_all:
            return (self.quota_header, (b"ratelimit", self.states % tuple(told)))
        judged = self.rules[: len(told) // 2]
        states = b", ".join(rule.state for rule in judged)
        return (
            (b"ratelimit-policy", b", ".join(rule.quota for rule in judged)),
            (b"ratelimit", states % tuple(told)),
        )


_PLAN_TTL = 1.0  # seconds: a token may expire, an organization's plan change, and each is seen this late at most
_PLANS_KEPT = 10_000


def _refuse(status: int, code: str, title: str, detail: str, *, wait: int = 1, extra: Headers = ()) -> Response:
    response = problem(status, code, title, detail, headers={"Retry-After": str(wait)})
    response.raw_headers.extend(extra)
    return response


def _admission(platform: Platform) -> Admission:
    """In process or on Redis, as the platform keeps its limiter state."""
    limit = platform.settings.concurrent_requests_per_principal
    store, leases, fallback = platform.limiter.store, platform.concurrency, platform.limiter.fallback
    if isinstance(store, MemoryStore) and isinstance(leases, MemoryConcurrency):
        return LocalAdmission(store, leases, in_flight=limit, ttl=LEASE_TTL)
    if (
        isinstance(store, RedisStore)
        and isinstance(leases, RedisConcurrency)
        and isinstance(fallback, MemoryStore)
        and platform.batcher is not None
    ):
        local = LocalAdmission(fallback, platform.local_concurrency, in_flight=limit, ttl=LEASE_TTL)
        return RedisAdmission(
            platform.limiter, platform.batcher, local, budget_prefix=store.prefix, lease_prefix=leases.prefix
        )
    raise TypeError(f"no admission for {type(store).__name__} with {type(leases).__name__}")


class _Limits:
    """What the middleware needs of one platform, worked out the first time it sees it."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.enabled = platform.rate_limits.enabled
        self.policies = platform.rate_limits
        self.shedder = platform.shedder
        self.trusted = platform.trusted_proxies
        self.admission = _admission(platform)
        self.local = self.admission if isinstance(self.admission, LocalAdmission) else None
        self.release = self.admission.release
        self.rules = {group: tuple(_Rule.of(p) for p in self.policies.for_group(group)) for group in PRIORITIES}
        self._plans: dict[tuple[str, str, str | None, bytes | None, bytes | None], tuple[_Plan, float]] = {}

    def plan(self, scope: Scope, now: float) -> _Plan:
        """The request's plan at ``now`` (monotonic): made for the first request of its kind, then looked up for
        a second."""
        authorization = forwarded = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"x-forwarded-for":
                forwarded = value
        client = scope.get("client")
        kind = (scope["method"], scope["path"], client[0] if client else None, authorization, forwarded)
        known = self._plans.get(kind)
        if known is not None and known[1] > now:
            return known[0]
        if len(self._plans) >= _PLANS_KEPT:
            self._plans.clear()
        plan = self._make_plan(*kind)
        self._plans[kind] = (plan, now + _PLAN_TTL)
        return plan

    def _make_plan(
        self, method: str, path: str, peer: str | None, authorization: bytes | None, forwarded: bytes | None
    ) -> _Plan:
        """Which budgets a request spends: one for each policy of its group that can name a subject."""
        group = route_group(method, path)
        if group is None:  # never limited: nothing to spend, never shed
            return _Plan(Priority.CRITICAL, self.admission.prepare([], cost=0, holder=None), [], b"", b"")
        ip = client_ip(peer, forwarded.decode("latin-1"), self.trusted) if forwarded and self.trusted else peer
        principal = None
        rules: list[_Rule] = []
        budgets: list[Budget] = []
        for rule in self.rules[group]:
            counted = rule
            by = rule.policy.by
            if by is Subject.IP:
                subject = ip
            elif by is Subject.PRINCIPAL:
                subject = principal = _principal(self.platform, authorization)
            else:
                org = org_in_path(path)
                subject = str(org) if org else None
                rate = self.platform.org_rates.rate_for(org, rule.policy) if org else None
                if rate is not None and rate != rule.rate:  # the organization's plan sets its own
                    counted = _Rule.of(rule.policy, rate)
            if subject:
                rules.append(counted)
                budgets.append((counted.policy, counted.rate, counted.prefix + subject))
        ticket = self.admission.prepare(budgets, cost=self.policies.cost(method, path), holder=principal)
        quotas = b", ".join(rule.quota for rule in rules)
        states = b", ".join(rule.state for rule in rules)
        return _Plan(PRIORITIES[group], ticket, rules, quotas, states)


class RateLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._limits: _Limits | None = None

    def _limits_of(self, scope: Scope) -> _Limits | None:
        app = scope.get("app")
        platform: Platform | None = getattr(app.state, "platform", None) if app is not None else None
        if platform is not None:
            self._limits = _Limits(platform)
        return self._limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                self._limits = None  # the lifespan brings a new platform: work its limits out again
            await self.app(scope, receive, send)
            return
        limits = self._limits or self._limits_of(scope)
        if limits is None or not limits.enabled or scope["path"].startswith(UNLIMITED):
            await self.app(scope, receive, send)
            return
        now = time.monotonic()  # one reading for the plan, the shedder, every budget and the lease
        plan = limits.plan(scope, now)
        if not limits.shedder.admit(plan.priority, now):
            await _refuse(503, "overloaded", "Overloaded", "The server is overloaded; try again shortly.")(
                scope, receive, send
            )
            return
        try:
            if limits.local is not None:  # in process: no coroutine to make and await
                verdict = limits.local.admit_now(plan.ticket, now)
            else:
                verdict = await limits.admission.admit(plan.ticket)
        except LimiterUnavailable as exc:
            await _refuse(503, exc.code, exc.title, exc.detail)(scope, receive, send)
            return
        extra = plan.headers(verdict.told) if verdict.told else ()
        if verdict.refused is not None or (verdict.lease is not None and not verdict.lease.granted):
            await _too_many(verdict, extra)(scope, receive, send)
            return
        scope[EXTRA_HEADERS] = extra  # RequestContext adds them as the response starts
        shedder = limits.shedder
        shedder.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            shedder.in_flight -= 1
            if verdict.lease is not None:
                limits.release(plan.ticket, verdict)


def _too_many(verdict: Verdict, extra: Headers) -> Response:
    if verdict.refused is not None:
        wait = max(1, math.ceil(verdict.refused.retry_after))
        detail = f"Slow down: try again in {wait} seconds."
        return _refuse(429, "too_many_requests", "Too many requests", detail, wait=wait, extra=extra)
    limit = verdict.lease.limit if verdict.lease is not None else 0
    detail = f"At most {limit} requests at once per user or API key; wait for one to finish."
    return _refuse(429, "too_many_requests", "Too many requests at once", detail)
