"""Making organizations, members and API keys, through the public API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select

from tenantry.core.context import Actor
from tenantry.db import scope
from tenantry.events.models import OutboxEvent
from tenantry.platform import Platform
from tenantry.tenancy.orgs import add_member as insert_member
from tenantry.tenancy.policy import Caller
from tests.factories.identity import Account, login, signed_in, signup
from tests.mailsink import MailSink


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


async def create_role(
    client: httpx.AsyncClient, org: Org, key: str, permissions: list[str], *, by: Account | None = None
) -> dict[str, object]:
    """A custom role of ``org`` made through the API (by its owner unless ``by`` is given)."""
    payload = {"key": key, "name": key.replace("-", " ").title(), "permissions": permissions}
    response = await client.post(org.path("/roles"), json=payload, headers=(by or org.owner).headers)
    assert response.status_code == 201, response.text
    found: dict[str, object] = response.json()
    return found


async def read_audit_log(
    client: httpx.AsyncClient, org: Org, platform: Platform, *, by: Account | None = None, **params: str | int
) -> httpx.Response:
    """The organization's audit log once the outbox consumer has written every pending event."""
    await platform.drain()
    return await client.get(org.path("/audit-log"), params=params, headers=(by or org.owner).headers)


async def verified(client: httpx.AsyncClient, mail: MailSink, *, email: str | None = None) -> Account:
    """A new user who confirmed their address with the mailed token, signed in. Mails already
    delivered to ``email`` (an invitation) are counted, so wait for them before calling this."""
    earlier = len(mail.to(email)) if email else 0
    account = await signup(client, email=email)
    token = await mail.await_token(account.email, count=earlier + 1)
    response = await client.post("/v1/auth/verify-email", json={"token": token})
    assert response.status_code == 200, response.text
    return await login(client, account)


async def create_team(client: httpx.AsyncClient, org: Org, by: Account | None = None, *, name: str = "Core") -> str:
    """A new team's id."""
    response = await client.post(org.path("/teams"), json={"name": name}, headers=(by or org.owner).headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def invite(
    client: httpx.AsyncClient, org: Org, email: str, by: Account | None = None, **body: object
) -> dict[str, object]:
    """An invitation of ``email`` (role ``member`` unless given); its token is in the mail sink."""
    payload: dict[str, object] = {"email": email, "role": "member", **body}
    response = await client.post(org.path("/invitations"), json=payload, headers=(by or org.owner).headers)
    assert response.status_code == 201, response.text
    found: dict[str, object] = response.json()
    return found


async def org_events(platform: Platform, org: Org, type: str) -> list[dict[str, Any]]:
    """The data of the organization's events of ``type``, oldest first."""
    async with platform.db.read() as tx:
        query = select(OutboxEvent.data).where(OutboxEvent.org_id == uuid.UUID(org.id), OutboxEvent.type == type)
        return list((await tx.scalars(query.order_by(OutboxEvent.id))).all())
