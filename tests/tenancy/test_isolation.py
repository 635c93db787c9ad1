"""The tenant-isolation matrix: for EVERY route that names an organization or something in one, a caller
from organization A who sends organization B's ids gets 404 ``not_found``, the answer carries none of
B's data, and nothing of B changes. Run as A's owner and as an API key of A, on SQLite and PostgreSQL.

The routes are read from the application itself, so a route added later is probed too (and fails this
test until the matrix knows what body to send it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from tenantry.platform import Platform
from tenantry.settings import Settings
from tests.factories.identity import Account
from tests.factories.tenancy import (
    Org,
    add_member,
    bearer,
    create_api_key,
    create_org,
    create_role,
    create_team,
    invite,
)

# A valid body for each request schema, so that validation never answers before authorization does.
BODIES: dict[str, dict[str, object]] = {
    "OrgUpdate": {"name": "Taken over"},
    "MemberUpdate": {"role": "viewer"},
    "ApiKeyCreate": {"name": "probe"},
    "RoleCreate": {"key": "probe", "name": "Probe", "permissions": ["org.read"]},
    "RoleUpdate": {"name": "Probe"},
    "TeamCreate": {"name": "Probe"},
    "TeamUpdate": {"name": "Probe"},
    "TeamMemberAdd": {"user_id": "<user_id>", "role": "member"},
    "InvitationCreate": {"email": "probe@example.com", "role": "member"},
    "EndpointCreate": {"url": "http://127.0.0.1:9/probe"},
    "EndpointUpdate": {"url": "http://127.0.0.1:9/taken-over", "enabled": False},
    "Recover": {"since": "2026-01-01T00:00:00Z"},
}
PARAM = re.compile(r"{(\w+)}")


@dataclass
class Victim:
    """Organization B and everything in it that a probe may name."""

    org: Org
    member: Account
    ids: dict[str, str]
    secrets: list[str]  # what must never appear in an answer to A


async def _victim(client: httpx.AsyncClient, platform: Platform) -> Victim:
    org = await create_org(client, name="Victim Industries")
    member = await add_member(client, org, platform, role="admin")
    team = await create_team(client, org, name="Victim secret team")
    await client.post(
        org.path(f"/teams/{team}/members"),
        json={"user_id": member.user_id, "role": "member"},
        headers=org.owner.headers,
    )
    key = await create_api_key(client, org, name="victim-key")
    role = await create_role(client, org, "victim-role", ["org.read"])
    invitation = await invite(client, org, "invited-victim@example.com")
    endpoint = await client.post(
        org.path("/webhooks"), json={"url": "http://127.0.0.1:9/victim-hook"}, headers=org.owner.headers
    )
    await client.post(org.path(f"/webhooks/{endpoint.json()['id']}/test"), headers=org.owner.headers)
    await platform.drain()
    deliveries = await client.get(org.path(f"/webhooks/{endpoint.json()['id']}/deliveries"), headers=org.owner.headers)
    ids = {
        "org_id": org.id,
        "user_id": member.user_id,
        "team_id": team,
        "key_id": str(key["id"]),
        "key": str(role["key"]),
        "invitation_id": str(invitation["id"]),
        "endpoint_id": endpoint.json()["id"],
        "delivery_id": deliveries.json()["items"][0]["id"],
    }
    secrets = ["Victim Industries", org.slug, org.owner.email, member.email, "Victim secret team",
               str(key["prefix"]), "invited-victim@example.com", "victim-hook", endpoint.json()["secret"]]  # fmt: skip
    return Victim(org, member, ids, secrets)


def _routes(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, path, request schema) of every route that names an organization."""
    spec = app.openapi()
    found = []
    for path, operations in spec["paths"].items():
        if "{org_id}" not in path:
            continue
        for method, operation in operations.items():
            ref = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            found.append((method.upper(), path, str(ref.get("$ref", "")).rsplit("/", 1)[-1]))
    return found


async def _snapshot(client: httpx.AsyncClient, victim: Victim) -> dict[str, object]:
    """Everything of B that a probe could have changed, as B's owner sees it."""
    seen: dict[str, object] = {}
    for part in (
        "",
        "/members",
        "/teams",
        "/roles",
        "/api-keys",
        "/invitations",
        "/webhooks",
        f"/webhooks/{victim.ids['endpoint_id']}/secret",
        f"/teams/{victim.ids['team_id']}/members",
    ):
        response = await client.get(victim.org.path(part), headers=victim.org.owner.headers)
        assert response.status_code == 200, (part, response.text)
        body = response.json()
        if isinstance(body, dict) and "items" in body:
            for item in body["items"]:
                item.pop("last_used_at", None)
        seen[part] = body
    return seen


async def _probe(
    client: httpx.AsyncClient, headers: dict[str, str], victim: Victim, own: Org, app: FastAPI
) -> list[str]:
    """Every route, with B's ids and with A's organization around B's other ids; the failures found."""
    failures = []
    for method, path, schema in _routes(app):
        if schema and schema not in BODIES:
            failures.append(f"{method} {path}: the matrix has no body for {schema}; add one")
            continue
        names = PARAM.findall(path)
        variants = [victim.ids] + ([{**victim.ids, "org_id": own.id}] if len(names) > 1 else [])
        for values in variants:
            url = PARAM.sub(lambda m, v=values: v[m.group(1)], path)
            body = {
                k: (victim.ids[v[1:-1]] if isinstance(v, str) and v.startswith("<") else v)
                for k, v in BODIES.get(schema, {}).items()
            }
            response = await client.request(method, url, json=body if schema else None, headers=headers)
            where = f"{method} {url} ({'B' if values['org_id'] == victim.org.id else 'A'}'s organization)"
            if response.status_code != 404 or response.json().get("code") != "not_found":
                failures.append(f"{where}: {response.status_code} {response.text[:200]}")
            leaked = [s for s in victim.secrets if s in response.text]
            if leaked:
                failures.append(f"{where}: the answer carries {leaked}")
    return failures


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The victim's webhook endpoint listens on loopback (port 9, where nothing answers)."""
    return settings.model_copy(update={"webhook_allow_private": True, "webhook_timeout_seconds": 1.0})


@pytest.mark.parametrize("as_", ["user", "api_key"])
async def test_another_organizations_ids_are_not_found_and_change_nothing(
    client: httpx.AsyncClient, platform: Platform, app: FastAPI, as_: str
) -> None:
    own = await create_org(client, name="Prober Ltd")
    victim = await _victim(client, platform)
    # As an API key: the strongest key A can make.
    headers = own.owner.headers if as_ == "user" else bearer((await create_api_key(client, own, role="admin"))["key"])
    before = await _snapshot(client, victim)

    failures = await _probe(client, headers, victim, own, app)

    assert failures == []
    assert await _snapshot(client, victim) == before
    assert len(_routes(app)) >= 25  # the matrix really walked the organization routes


async def test_listing_organizations_shows_each_caller_only_their_own(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    """Organization listings cross organizations by nature: each caller sees only their own."""
    own = await create_org(client)
    victim = await _victim(client, platform)

    mine = await client.get("/v1/orgs", headers=own.owner.headers)
    theirs = await client.get("/v1/orgs", headers=victim.member.headers)

    assert [o["id"] for o in mine.json()["items"]] == [own.id]
    assert [o["id"] for o in theirs.json()["items"]] == [victim.org.id]
    assert not any(s in mine.text for s in victim.secrets)
