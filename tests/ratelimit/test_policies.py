"""Which policy counts which request, at what cost, and how settings override them."""

from __future__ import annotations

import json
import uuid

import pytest

from tenantry.ratelimit.gcra import Rate
from tenantry.ratelimit.policies import Policies, Subject, org_in_path, route_group


@pytest.mark.parametrize(
    ("method", "path", "group"),
    [
        ("POST", "/v1/auth/login", "login"),
        ("POST", "/v1/auth/mfa", "login"),
        ("POST", "/v1/auth/passkey/options", "login"),
        ("POST", "/v1/auth/signup", "auth"),
        ("GET", "/v1/me", "api"),
        ("GET", "/v1/orgs/x/members", "api"),
        ("POST", "/", "console"),
        ("GET", "/account", "console"),
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("GET", "/console/static/console.css", None),
    ],
)
def test_every_request_falls_in_one_group_or_is_never_limited(method: str, path: str, group: str | None) -> None:
    assert route_group(method, path) == group


def test_writes_and_mails_cost_more_than_reads() -> None:
    policies = Policies.from_settings("")

    assert policies.cost("GET", "/v1/me") == 1
    assert policies.cost("PATCH", "/v1/me") == 2
    assert policies.cost("POST", "/v1/auth/password/forgot") == 5
    assert policies.cost("POST", f"/v1/orgs/{uuid.uuid4()}/invitations") == 5


def test_settings_override_numbers_shadow_mode_and_costs() -> None:
    overrides = {
        "api.principal": {"limit": 100, "period": 10, "burst": 5},
        "api.ip": {"shadow": True},
        "costs": {"write": 7},
    }

    policies = Policies.from_settings(json.dumps(overrides))
    by_name = {p.name: p for p in policies.policies}

    assert by_name["api.principal"].rate == Rate(100, 10, 5)
    assert by_name["api.principal"].by is Subject.PRINCIPAL
    assert by_name["api.ip"].shadow
    assert not by_name["api.org"].shadow
    assert by_name["login.ip"].fail_closed
    assert policies.cost("POST", "/v1/orgs") == 7


@pytest.mark.parametrize(
    "overrides",
    ['{"no.such.policy": {"limit": 1}}', '{"api.ip": {"limit": 0}}', '{"api.ip": {"limit": "many"}}', "[1, 2]"],
)
def test_bad_overrides_are_refused_at_start(overrides: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        Policies.from_settings(overrides)


def test_an_organization_is_read_from_the_path() -> None:
    org = uuid.uuid4()

    assert org_in_path(f"/v1/orgs/{org}/members") == org
    assert org_in_path(f"/v1/orgs/{org}") == org
    assert org_in_path("/v1/orgs") is None
    assert org_in_path("/v1/orgs/not-a-uuid/members") is None
