"""The audit log: what was done in an organization, by whom (user or API key), to what, from where;
newest first, page by page, and never another organization's."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import select

from tenantry.core.context import Actor
from tenantry.db.engine import Database
from tenantry.events.dispatcher import _AFTER
from tenantry.events.outbox import emit
from tenantry.platform import Platform
from tenantry.tenancy import audit
from tenantry.tenancy.models import AuditEntry
from tests.factories.tenancy import Org, add_member, bearer, create_api_key, create_org, read_audit_log

LOOPBACK = "127.0.0.1"


async def _tick() -> None:
    """Entry ids are UUIDv7, ordered by the millisecond: let one pass so consecutive steps stay in order."""
    await asyncio.sleep(0.002)


async def _history(client: httpx.AsyncClient, platform: Platform) -> tuple[Org, dict[str, str]]:
    """An organization where a user, an API key and the system have each done something."""
    org = await create_org(client)
    await _tick()
    key = await create_api_key(client, org, permissions=["org.read", "org.update"])
    await _tick()
    renamed = await client.patch(org.path(), json={"name": "Renamed by a key"}, headers=bearer(key["key"]))
    assert renamed.status_code == 200, renamed.text
    await _tick()
    member = await add_member(client, org, platform, role="viewer")
    await _tick()
    changed = await client.patch(
        org.path(f"/members/{member.user_id}"), json={"role": "member"}, headers=org.owner.headers
    )
    assert changed.status_code == 200, changed.text
    await _tick()
    removed = await client.delete(org.path(f"/members/{member.user_id}"), headers=org.owner.headers)
    assert removed.status_code == 204, removed.text
    return org, {"key": str(key["id"]), "member": member.user_id}


async def test_the_audit_log_tells_what_was_done_by_whom_newest_first(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org, ids = await _history(client, platform)
    owner = {"type": "user", "id": org.owner.user_id, "email": org.owner.email}
    api_key = {"type": "api_key", "id": ids["key"], "email": None}
    member = {"type": "user", "id": ids["member"]}

    response = await read_audit_log(client, org, platform)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    seen = [(e["action"], e["actor"], e["target"], e["ip"]) for e in body["items"]]
    assert seen[:5] == [
        ("organization.member_removed", owner, member, LOOPBACK),
        ("organization.member_updated", owner, member, LOOPBACK),
        ("organization.member_added", {"type": "system", "id": None, "email": None}, member, None),
        ("organization.updated", api_key, {"type": "organization", "id": org.id}, LOOPBACK),
        ("api_key.created", owner, {"type": "api_key", "id": ids["key"]}, LOOPBACK),
    ]
    # One transaction made the organization and its first owner: one millisecond, in no order.
    assert sorted(seen[5:], key=lambda s: s[0]) == [
        ("organization.created", owner, {"type": "organization", "id": org.id}, LOOPBACK),
        ("organization.member_added", owner, {"type": "user", "id": org.owner.user_id}, LOOPBACK),
    ]
    first = body["items"][0]
    assert set(first) == {"id", "action", "actor", "target", "ip", "at"}
    assert [e["at"] for e in body["items"][:5]] == sorted((e["at"] for e in body["items"][:5]), reverse=True)


async def test_the_audit_log_pages_newest_first_and_filters_by_action(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org, ids = await _history(client, platform)
    everything = (await read_audit_log(client, org, platform)).json()["items"]

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = (await read_audit_log(client, org, platform, limit=3, cursor=cursor or "")).json()
        pages.append([e["id"] for e in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    updated = await read_audit_log(client, org, platform, action="organization.member_updated")
    bad_cursor = await read_audit_log(client, org, platform, cursor="not-one-of-ours")
    bad_limit = await read_audit_log(client, org, platform, limit=201)

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == [e["id"] for e in everything]
    assert [(e["action"], e["target"]["id"]) for e in updated.json()["items"]] == [
        ("organization.member_updated", ids["member"])
    ]
    assert (bad_cursor.status_code, bad_cursor.json()["code"]) == (422, "validation_error")
    assert bad_limit.status_code == 422


async def test_the_audit_log_needs_audit_read_and_shows_one_organization_only(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org, _ = await _history(client, platform)
    other, other_ids = await _history(client, platform)
    viewer_key = (await create_api_key(client, org, role="viewer"))["key"]
    member = await add_member(client, org, platform, role="member")
    admin = await add_member(client, org, platform, role="admin")

    theirs = await read_audit_log(client, other, platform, by=org.owner)
    as_member = await read_audit_log(client, org, platform, by=member)
    as_key = await client.get(org.path("/audit-log"), headers=bearer(viewer_key))
    as_admin = await read_audit_log(client, org, platform, by=admin)
    other_owner_view = await read_audit_log(client, other, platform)

    assert (theirs.status_code, theirs.json()["code"]) == (404, "not_found")
    assert (as_member.status_code, as_member.json()["code"]) == (403, "forbidden")
    assert (as_key.status_code, as_key.json()["code"]) == (403, "forbidden")
    assert as_admin.status_code == 200
    mine = as_admin.json()["items"]
    strangers = {other.id, other.owner.user_id, other_ids["key"], other_ids["member"]}
    assert len(mine) == 10  # the 7 of the history, a key and two members since
    assert not strangers & ({e["target"]["id"] for e in mine} | {e["actor"]["id"] for e in mine})
    assert len(other_owner_view.json()["items"]) == 7


async def test_an_entry_is_its_event_copied_whole_and_an_event_handed_over_twice_is_written_once(db: Database) -> None:
    org_id = uuid.uuid4()
    team = {"id": str(uuid.uuid4()), "name": 'Ünïcode "quoted" team', "size": 2**63 + 1, "tags": [None, 1.5]}
    actor = Actor(type="api_key", id="key_123", ip="2001:db8::7", user_agent='curl/8.5 ("quoted")')
    async with db.direct() as tx:
        await emit(tx, "team.created", data={"team": team}, actor=actor, org_id=org_id)
        await emit(tx, "organization.updated", data={"target": {"type": "org", "id": 42}}, org_id=org_id)
    async with db.direct_read() as reader:
        events = await _AFTER.rows(reader, 0, 10)

    for _ in range(2):  # the second time, as after a lost cursor update: nothing more is written
        async with db.direct() as tx:
            await audit.record(tx, events)

    async with db.read() as session:
        entries = (await session.scalars(select(AuditEntry))).all()
    position = {event.event_id: i for i, event in enumerate(events)}
    entries = sorted(entries, key=lambda e: position[e.event_id])  # in their events' order
    got = [
        (e.id, e.event_id, e.org_id, e.action, e.actor_type, e.actor_id, e.target_type, e.target_id, e.ip,
         e.user_agent, e.data, e.at)
        for e in entries
    ]  # fmt: skip
    first, second = events
    assert got == [
        (first.event_id, first.event_id, org_id, "team.created", "api_key", "key_123", "team", team["id"],
         actor.ip, actor.user_agent, {"team": team}, first.occurred_at),
        (second.event_id, second.event_id, org_id, "organization.updated", "system", None, "org", "42", None, None,
         {"target": {"type": "org", "id": 42}}, second.occurred_at),
    ]  # fmt: skip
