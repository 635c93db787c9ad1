"""The member list costs a fixed number of SQL statements, whatever the number of members (no N+1)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import httpx

from tenantry.platform import Platform
from tests.factories.tenancy import Org, add_member, create_org
from tests.statements import recorded


def _asked_by_a_request(statement: str, parameters: Any) -> bool:
    # Only what a request asks of the tenancy and user tables: the background loops (the outbox dispatcher,
    # the job runner, the batched session touch, the webhook deliverer, whose transactions cross
    # organizations: 'tenantry.unscoped') poll on their own schedule.
    if "set_config" in statement and "tenantry.unscoped" in str(parameters):
        return False
    return "tenancy_" in statement or "identity_user" in statement or "set_config" in statement


def counting(platform: Platform) -> AbstractContextManager[list[str]]:
    return recorded(platform.db, keep=_asked_by_a_request)


async def _statements_for_members(client: httpx.AsyncClient, platform: Platform, org: Org) -> list[str]:
    await client.get("/v1/me", headers=org.owner.headers)  # who is calling: known from memory, not counted
    await platform.drain()  # the members' events are in the audit log already: its inserts are not the request's
    platform.policy.orgs.clear()  # a cold read: what the database is asked when memory knows nothing
    with counting(platform) as seen:
        response = await client.get(org.path("/members?limit=200"), headers=org.owner.headers)
    assert response.status_code == 200
    assert len(response.json()["items"]) == len(org.members) + 1
    return seen


async def test_listing_members_takes_the_same_statements_for_3_or_30_members(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    small, large = await create_org(client), await create_org(client)
    for _ in range(2):
        await add_member(client, small, platform)
    for _ in range(29):
        await add_member(client, large, platform)

    few = await _statements_for_members(client, platform, small)
    many = await _statements_for_members(client, platform, large)

    assert len(few) == len(many)
    assert len(many) <= 4, many  # (the scope,) organization + membership, the members page, their users


async def test_a_warm_member_list_asks_the_database_nothing(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    await add_member(client, org, platform)
    await client.get(org.path("/members"), headers=org.owner.headers)

    with counting(platform) as seen:
        again = await client.get(org.path("/members"), headers=org.owner.headers)

    assert again.status_code == 200
    assert seen == []


async def test_a_membership_change_is_seen_by_the_next_member_list(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org = await create_org(client)
    member = await add_member(client, org, platform)
    before = await client.get(org.path("/members"), headers=org.owner.headers)

    await client.patch(org.path(f"/members/{member.user_id}"), json={"role": "viewer"}, headers=org.owner.headers)
    renamed = await client.patch("/v1/me", json={"name": "New Name"}, headers=member.headers)
    after = await client.get(org.path("/members"), headers=org.owner.headers)

    assert renamed.status_code == 200
    roles = {m["user_id"]: (m["role"], m["name"]) for m in after.json()["items"]}
    assert {m["user_id"] for m in before.json()["items"]} == set(roles)
    assert roles[member.user_id] == ("viewer", "New Name")
