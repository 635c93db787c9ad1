"""Every limit of every door, in one place: which requests a policy counts, keyed by what, at what rate.

A request belongs to one route group (``login``, ``auth``, ``api``, ``console``; GraphQL, realtime
and ingestion join later) and is counted by every policy of its group: by client address, by
principal (a user, whatever session they use, or an API key) and by organization (when the path
names one). A request may cost more than one unit (writes, mails). ``TENANTRY_RATE_LIMITS`` (JSON)
overrides any number, and turns a policy to shadow mode (counted and reported, never refused).
Later issues (billing plans) supply per-organization rates through :class:`OrgRates`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from tenantry.ratelimit.gcra import Rate


class Subject(StrEnum):
    IP = "ip"
    PRINCIPAL = "principal"
    ORG = "org"


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    name: str
    group: str
    by: Subject
    rate: Rate
    shadow: bool = False  # count and report, never refuse
    fail_closed: bool = False  # when the shared store is down: refuse (True) or limit per process (False)


DEFAULT_POLICIES = (
    # Signing in guesses secrets: it fails closed when the shared store is down.
    LimitPolicy("login.ip", "login", Subject.IP, Rate(60, 60, 20), fail_closed=True),
    LimitPolicy("auth.ip", "auth", Subject.IP, Rate(120, 60, 30)),
    LimitPolicy("api.ip", "api", Subject.IP, Rate(1200, 60, 300)),
    LimitPolicy("api.principal", "api", Subject.PRINCIPAL, Rate(600, 60, 150)),
    LimitPolicy("api.org", "api", Subject.ORG, Rate(3000, 60, 600)),
    LimitPolicy("console.ip", "console", Subject.IP, Rate(300, 60, 60)),
)
DEFAULT_COSTS = {"read": 1, "write": 2, "mail": 5}

_LOGIN = ("/v1/auth/login", "/v1/auth/mfa", "/v1/auth/passkey")
_MAILS = ("/v1/auth/signup", "/v1/auth/password/forgot", "/v1/auth/verify-email/resend")
_ORG = re.compile(r"^/v1/orgs/([0-9a-fA-F-]{36})(?:/|$)")
UNLIMITED = ("/healthz", "/readyz", "/metrics", "/console/static/", "/favicon.ico")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def route_group(method: str, path: str) -> str | None:
    """The group a request is counted in, or None for what is never limited (health, static files)."""
    if path.startswith(UNLIMITED):
        return None
    if path.startswith(_LOGIN):
        return "login"
    if path.startswith("/v1/auth/"):
        return "auth"
    if path.startswith("/v1/") or path == "/v1":
        return "api"
    return "console"


def org_in_path(path: str) -> uuid.UUID | None:
    found = _ORG.match(path)
    if found is None:
        return None
    try:
        return uuid.UUID(found.group(1))
    except ValueError:
        return None


class OrgRates(Protocol):
    """Per-organization rates (billing plans will supply them); None keeps the policy's own rate."""

    def rate_for(self, org_id: uuid.UUID, policy: LimitPolicy) -> Rate | None: ...


class NoOrgRates:
    def rate_for(self, org_id: uuid.UUID, policy: LimitPolicy) -> Rate | None:
        return None


@dataclass(frozen=True)
class Policies:
    """The policies in force, and the cost of each kind of request."""

    policies: tuple[LimitPolicy, ...]
    costs: dict[str, int]
    enabled: bool = True
    _groups: dict[str, tuple[LimitPolicy, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        groups: dict[str, tuple[LimitPolicy, ...]] = {}
        for policy in self.policies:
            groups[policy.group] = (*groups.get(policy.group, ()), policy)
        object.__setattr__(self, "_groups", groups)  # asked on every request: worked out once

    def for_group(self, group: str) -> tuple[LimitPolicy, ...]:
        return self._groups.get(group, ())

    def cost(self, method: str, path: str) -> int:
        if path.startswith(_LOGIN):
            return self.costs["read"]  # a sign-in attempt is one attempt, whatever its method
        if method in WRITES and (path.startswith(_MAILS) or path.endswith(("/invitations", "/resend"))):
            return self.costs["mail"]
        return self.costs["write" if method in WRITES else "read"]

    @classmethod
    def from_settings(cls, overrides: str, *, enabled: bool = True) -> Policies:
        """The defaults with ``TENANTRY_RATE_LIMITS`` applied, e.g.
        ``{"api.principal": {"limit": 100, "period": 60, "burst": 20, "shadow": true}, "costs": {"write": 3}}``.
        Raises ``ValueError`` for an unknown policy or a malformed number."""
        given = json.loads(overrides) if overrides.strip() else {}
        if not isinstance(given, dict):
            raise ValueError("TENANTRY_RATE_LIMITS must be a JSON object")
        costs = {**DEFAULT_COSTS, **{k: int(v) for k, v in dict(given.pop("costs", {})).items()}}
        known = {p.name: p for p in DEFAULT_POLICIES}
        unknown = set(given) - set(known)
        if unknown:
            raise ValueError(f"unknown rate-limit policies: {', '.join(sorted(unknown))}")
        policies = tuple(_override(p, given.get(p.name, {})) for p in DEFAULT_POLICIES)
        return cls(policies, costs, enabled)


def _override(policy: LimitPolicy, change: dict[str, object]) -> LimitPolicy:
    rate = policy.rate
    limit = int(str(change.get("limit", rate.limit)))
    period = float(str(change.get("period", rate.period)))
    burst = int(str(change.get("burst", min(rate.burst, limit) if "limit" in change else rate.burst)))
    if limit < 1 or period <= 0 or burst < 1:
        raise ValueError(f"{policy.name}: limit, period and burst must be positive")
    return replace(
        policy,
        rate=Rate(limit, period, burst),
        shadow=bool(change.get("shadow", policy.shadow)),
        fail_closed=bool(change.get("fail_closed", policy.fail_closed)),
    )
