"""The event catalog: every event type has a described model of its data, and what the platform really
emits fits that model.

The flow test drives the public API through every change that emits an event, on both databases, then
validates every row of the outbox against the model of its type. The models are closed, so a field
that is emitted but not described fails, as does a described field that is missing or of another type.
"""

from __future__ import annotations

import json
import typing
import uuid
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from tenantry.core.context import Actor
from tenantry.events.catalog import EVENT_TYPES, EventType
from tenantry.events.models import OutboxEvent
from tenantry.platform import Platform  # builds every domain's services, so every event type is registered
from tests.factories.authenticator import SoftAuthenticator
from tests.factories.identity import Account, enable_totp, login, signed_in
from tests.factories.tenancy import Org, create_api_key, create_org, create_role, create_team, invite, verified
from tests.mailsink import MailSink

# Event types the flow below cannot emit, and why. Anything else in the catalog must be emitted.
# The webhooks domain's types are left to its own tests: its endpoints need a receiver and a webhooks API.
_WEBHOOKS = "the webhooks domain's own: its tests drive endpoints against a real receiver"
NOT_REACHED = {
    "webhook.test": f"sent on request to one endpoint; {_WEBHOOKS}",
    "endpoint.disabled": f"needs a receiver answering 410 or failing for days; {_WEBHOOKS}",
    "endpoint.created": _WEBHOOKS,
    "endpoint.updated": _WEBHOOKS,
    "endpoint.deleted": _WEBHOOKS,
    "endpoint.secret_rotated": _WEBHOOKS,
}
NEW_PASSWORD = "another long and unusual passphrase"


# -- the catalog ----------------------------------------------------------------------------------------------
def _closed(schema: Any) -> list[str]:
    """The titles of objects in ``schema`` that would accept fields they do not name."""
    if isinstance(schema, list):
        return [title for item in schema for title in _closed(item)]
    if not isinstance(schema, dict):
        return []
    found = [] if "properties" not in schema or schema.get("additionalProperties") is False else [schema["title"]]
    return found + [title for value in schema.values() for title in _closed(value)]


def _refs(schema: Any) -> set[str]:
    if isinstance(schema, list):
        return {ref for item in schema for ref in _refs(item)}
    if not isinstance(schema, dict):
        return set()
    own = {schema["$ref"]} if isinstance(schema.get("$ref"), str) else set()
    return own | {ref for value in schema.values() for ref in _refs(value)}


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES.values(), key=lambda t: t.name), ids=lambda t: t.name)
def test_every_event_type_has_a_described_model_of_its_data(event_type: EventType) -> None:
    assert event_type.description.strip().endswith(".")
    assert issubclass(event_type.data, BaseModel)
    assert _closed(event_type.data.model_json_schema()) == []  # so the flow test catches undescribed fields

    published = json.loads(json.dumps(event_type.schema))

    assert published == event_type.schema
    assert published["type"] == "object"
    assert published["properties"]
    assert published["description"].strip()
    assert {f"#/$defs/{name}" for name in published.get("$defs", {})} >= _refs(published)
    # Adding a field to an event must not break receivers whose generated types refuse unknown ones.
    assert '"additionalProperties": false' not in json.dumps(published)


# -- what is really emitted ------------------------------------------------------------------------------------
async def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def _another_session(client: httpx.AsyncClient, account: Account) -> Account:
    return await login(client, Account(email=account.email, password=account.password, user_id=account.user_id))


async def _sessions_end_every_way(client: httpx.AsyncClient, account: Account, mail: MailSink) -> None:
    """session.revoked for each reason, user.password_changed both ways, user.email_verified by a reset."""
    listed, reused, dropped = [await _another_session(client, account) for _ in range(3)]
    sessions = (await _ok(await client.get("/v1/me/sessions", headers=listed.headers)))["items"]
    current = next(s["id"] for s in sessions if s["current"])
    await _ok(await client.delete(f"/v1/me/sessions/{current}", headers=listed.headers), 204)
    for _ in range(2):  # the second use of a spent refresh token ends its session
        await client.post("/v1/auth/refresh", json={"refresh_token": reused.refresh_token})
    change = {"current_password": account.password, "new_password": NEW_PASSWORD}
    await _ok(await client.post("/v1/me/password", json=change, headers=dropped.headers), 204)
    await _ok(await client.post("/v1/auth/logout", headers=dropped.headers), 204)

    unverified = await signed_in(client)
    await _ok(await client.post("/v1/auth/password/forgot", json={"email": unverified.email}), 202)
    token = await mail.await_token(unverified.email, count=2)  # the verification mail, then the reset
    await _ok(await client.post("/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}), 204)


async def _second_factors(client: httpx.AsyncClient, platform: Platform) -> None:
    """user.mfa_enabled, user.mfa_disabled both ways, user.passkey_added and user.passkey_removed."""
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    code = {"code": totp.recovery_codes[0]}
    await _ok(await client.request("DELETE", "/v1/me/mfa/totp", json=code, headers=account.headers), 204)
    await enable_totp(client, account)
    assert await platform.mfa.reset(email=account.email, actor=Actor(type="system", id="test"))

    options = await _ok(await client.post("/v1/me/passkeys/options", headers=account.headers))
    credential = SoftAuthenticator().create(options)
    body = {"credential": credential, "name": "Laptop"}
    passkey = await _ok(await client.post("/v1/me/passkeys", json=body, headers=account.headers), 201)
    await _ok(await client.delete(f"/v1/me/passkeys/{passkey['id']}", headers=account.headers), 204)


async def _identity(client: httpx.AsyncClient, platform: Platform, mail: MailSink) -> None:
    """Every identity event type (user.created, user.email_verified and session.created on the way)."""
    account = await verified(client, mail)
    await _ok(await client.patch("/v1/me", json={"name": "Ann Other"}, headers=account.headers))
    await _sessions_end_every_way(client, account, mail)
    await _second_factors(client, platform)


async def _members_and_roles(client: httpx.AsyncClient, org: Org, mail: MailSink) -> Account:
    """organization.updated, a member joining by domain, changing role; role.*; returns the joiner."""
    settings = {"name": "Renamed", "allowed_email_domains": ["example.com"]}
    await _ok(await client.patch(org.path(), json=settings, headers=org.owner.headers))
    joiner = await verified(client, mail)  # factories hand out @example.com addresses
    await _ok(await client.post(org.path("/join"), headers=joiner.headers))
    role = {"role": "admin"}
    await _ok(await client.patch(org.path(f"/members/{joiner.user_id}"), json=role, headers=org.owner.headers))

    await create_role(client, org, "auditor", ["audit.read"])
    change = {"name": "Auditors", "permissions": ["audit.read", "members.read"]}
    await _ok(await client.patch(org.path("/roles/auditor"), json=change, headers=org.owner.headers))
    await _ok(await client.delete(org.path("/roles/auditor"), headers=org.owner.headers), 204)
    return joiner


async def _teams(client: httpx.AsyncClient, org: Org, member: Account) -> str:
    """team.* and team.member_*; returns a team that stays."""
    team_id = await create_team(client, org, name="Platform")
    await _ok(await client.patch(org.path(f"/teams/{team_id}"), json={"name": "Infra"}, headers=org.owner.headers))
    joining = {"user_id": member.user_id, "role": "maintainer"}
    await _ok(await client.post(org.path(f"/teams/{team_id}/members"), json=joining, headers=org.owner.headers), 201)
    path = org.path(f"/teams/{team_id}/members/{member.user_id}")
    await _ok(await client.delete(path, headers=org.owner.headers), 204)
    gone = await create_team(client, org, name="Short-lived")
    await _ok(await client.delete(org.path(f"/teams/{gone}"), headers=org.owner.headers), 204)
    return team_id


async def _invitations(client: httpx.AsyncClient, org: Org, mail: MailSink, team_id: str) -> None:
    """invitation.* (revoked both ways); accepting adds a member to the organization and the team."""
    guest = await verified(client, mail)
    await invite(client, org, guest.email, team_ids=[team_id])
    token = await mail.await_token(guest.email, count=2)  # the verification mail, then the invitation
    await _ok(await client.post("/v1/invitations/accept", json={"token": token}, headers=guest.headers))

    stranger = f"stranger-{uuid.uuid4().hex[:8]}@example.org"
    await invite(client, org, stranger)
    replacing = await invite(client, org, stranger, role="viewer")  # revokes the first one: "replaced"
    await _ok(await client.delete(org.path(f"/invitations/{replacing['id']}"), headers=org.owner.headers), 204)


async def _tenancy(client: httpx.AsyncClient, mail: MailSink) -> None:
    """Every tenancy event type."""
    owner = await verified(client, mail)
    org = await create_org(client, owner)
    joiner = await _members_and_roles(client, org, mail)
    team_id = await _teams(client, org, joiner)
    await _invitations(client, org, mail, team_id)
    for body in ({}, {"permissions": ["audit.read"]}):
        key = await create_api_key(client, org, **body)
        await _ok(await client.delete(org.path(f"/api-keys/{key['id']}"), headers=owner.headers), 204)
    await _ok(await client.delete(org.path(f"/members/{joiner.user_id}"), headers=owner.headers), 204)
    doomed = await create_org(client, owner)
    await _ok(await client.delete(doomed.path(), headers=owner.headers), 204)


def _reasons(model: type[BaseModel]) -> set[str]:
    """The values a model's ``reason`` may take, if it names them."""
    field = model.model_fields.get("reason")
    if field is None or typing.get_origin(field.annotation) is not typing.Literal:
        return set()
    return {str(value) for value in typing.get_args(field.annotation)}


async def test_every_emitted_event_fits_the_model_of_its_type(
    client: httpx.AsyncClient, platform: Platform, mail: MailSink
) -> None:
    await _identity(client, platform, mail)
    await _tenancy(client, mail)
    async with platform.db.read() as tx:
        rows = list((await tx.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all())

    misfits = []
    for row in rows:
        model = EVENT_TYPES[row.type].data
        try:
            model.model_validate(row.data)
        except ValidationError as exc:
            misfits.append(f"{row.type} {row.data}: {exc}")
        with pytest.raises(ValidationError):  # the model is closed: an undescribed field fails
            model.model_validate({**row.data, "undescribed": True})
    assert misfits == []

    emitted = {row.type for row in rows}
    assert set(EVENT_TYPES) - emitted == set(NOT_REACHED) & set(EVENT_TYPES)
    # Each way an event can come about (its ``reason``) was taken, so each code path's payload was checked.
    seen = {(row.type, row.data.get("reason")) for row in rows}
    declared = {(name, reason) for name in emitted for reason in _reasons(EVENT_TYPES[name].data)}
    assert declared - seen == set()
