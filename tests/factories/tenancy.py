"""Making organizations, members and API keys, through the public API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import httpx

from tenantry.core.context import Actor
from tenantry.db import scope
from tenantry.platform import Platform
from tenantry.tenancy.orgs import add_member as insert_member
from tenantry.tenancy.policy import Caller
from tests.factories.identity import Account, signed_in


@dataclass
class Org:
    id: str
    slug: str
    owner: Account
    members: dict[str, Account] = field(default_factory=dict)

    def path(self, rest: str = "") -> str:
        return f"/v1/orgs/{self.id}{rest}"


async def create_org(client: httpx.AsyncClient, owner: Account | None = None, *, name: str | None = None) -> Org:
    owner = owner or await signed_in(client)
    response = await client.post(
        "/v1/orgs", json={"name": name or f"Org {uuid.uuid4().hex[:6]}"}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Org(id=body["id"], slug=body["slug"], owner=owner)


async def add_member(client: httpx.AsyncClient, org: Org, platform: Platform, *, role: str = "member") -> Account:
    """A new signed-in user made a member with ``role`` (directly through the service, as an accepted
    invitation would; the invitation flow has tests of its own)."""
    account = await signed_in(client)
    caller = Caller(actor=Actor(type="system"))
    async with platform.db.transaction() as tx:
        await scope.to_org(tx, uuid.UUID(org.id))
        await insert_member(tx, org_id=uuid.UUID(org.id), user_id=uuid.UUID(account.user_id), role=role, caller=caller)
    await platform.policy.forget(uuid.UUID(org.id))
    org.members[account.user_id] = account
    return account


async def create_api_key(
    client: httpx.AsyncClient, org: Org, by: Account | None = None, **body: object
) -> dict[str, object]:
    payload: dict[str, object] = {"name": "ci", **body}
    response = await client.post(org.path("/api-keys"), json=payload, headers=(by or org.owner).headers)
    assert response.status_code == 201, response.text
    found: dict[str, object] = response.json()
    return found


def bearer(key: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
