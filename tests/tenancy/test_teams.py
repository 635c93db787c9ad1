"""Teams: the contract, who may manage them, and that they never reach outside their organization."""

from __future__ import annotations

import uuid

import httpx

from tenantry.platform import Platform
from tests.factories.identity import signed_in
from tests.factories.tenancy import add_member, bearer, create_api_key, create_org, create_team, org_events


async def test_a_team_is_created_listed_renamed_and_deleted(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    headers = org.owner.headers

    created = await client.post(org.path("/teams"), json={"name": "  Platform  "}, headers=headers)
    team = created.json()
    listed = await client.get(org.path("/teams"), headers=headers)
    renamed = await client.patch(org.path(f"/teams/{team['id']}"), json={"name": "Infra"}, headers=headers)
    fetched = await client.get(org.path(f"/teams/{team['id']}"), headers=headers)
    deleted = await client.delete(org.path(f"/teams/{team['id']}"), headers=headers)
    gone = await client.get(org.path(f"/teams/{team['id']}"), headers=headers)

    assert created.status_code == 201, created.text
    assert set(team) == {"id", "name", "member_count", "created_at", "updated_at"}
    assert (team["name"], team["member_count"]) == ("Platform", 0)
    assert listed.json() == {"items": [team], "next_cursor": None}
    assert renamed.status_code == 200
    assert fetched.json()["name"] == "Infra"
    assert deleted.status_code == 204
    assert (gone.status_code, gone.json()["code"]) == (404, "not_found")
    assert [e["team"] for e in await org_events(platform, org, "team.created")] == [
        {"id": team["id"], "name": "Platform"}
    ]
    updated = await org_events(platform, org, "team.updated")
    assert [(e["team"], e["previous_name"]) for e in updated] == [({"id": team["id"], "name": "Infra"}, "Platform")]
    assert [e["target"] for e in await org_events(platform, org, "team.deleted")] == [
        {"type": "team", "id": team["id"]}
    ]


async def test_teams_are_paged(client: httpx.AsyncClient) -> None:
    org = await create_org(client)
    made = [await create_team(client, org, name=f"T{i}") for i in range(3)]

    first = await client.get(org.path("/teams"), params={"limit": 2}, headers=org.owner.headers)
    rest = await client.get(
        org.path("/teams"), params={"limit": 2, "cursor": first.json()["next_cursor"]}, headers=org.owner.headers
    )

    assert [t["id"] for t in first.json()["items"] + rest.json()["items"]] == made
    assert rest.json()["next_cursor"] is None


async def test_members_of_the_organization_join_and_leave_teams(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    member = await add_member(client, org, platform)
    team_id = await create_team(client, org)

    added = await client.post(
        org.path(f"/teams/{team_id}/members"),
        json={"user_id": member.user_id, "role": "maintainer"},
        headers=org.owner.headers,
    )
    again = await client.post(
        org.path(f"/teams/{team_id}/members"), json={"user_id": member.user_id}, headers=org.owner.headers
    )
    listed = await client.get(org.path(f"/teams/{team_id}/members"), headers=member.headers)
    counted = await client.get(org.path(f"/teams/{team_id}"), headers=member.headers)
    removed = await client.delete(org.path(f"/teams/{team_id}/members/{member.user_id}"), headers=org.owner.headers)
    after = await client.get(org.path(f"/teams/{team_id}/members"), headers=org.owner.headers)

    assert added.status_code == 201, added.text
    assert set(added.json()) == {"user_id", "email", "name", "role", "added_at"}
    assert (added.json()["email"], added.json()["role"]) == (member.email, "maintainer")
    assert (again.status_code, again.json()["code"]) == (409, "already_team_member")
    assert listed.json() == {"items": [added.json()], "next_cursor": None}
    assert counted.json()["member_count"] == 1
    assert removed.status_code == 204
    assert after.json()["items"] == []
    member_data = {"user_id": member.user_id, "role": "maintainer"}
    assert [e["member"] for e in await org_events(platform, org, "team.member_added")] == [member_data]
    removed_events = await org_events(platform, org, "team.member_removed")
    assert [(e["member"], e["target"]) for e in removed_events] == [
        (member_data, {"type": "user", "id": member.user_id})
    ]


async def test_only_members_of_the_organization_can_join_its_teams(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org = await create_org(client)
    team_id = await create_team(client, org)
    outsider = await signed_in(client)
    elsewhere = await create_org(client, outsider)

    stranger = await client.post(
        org.path(f"/teams/{team_id}/members"), json={"user_id": outsider.user_id}, headers=org.owner.headers
    )
    nobody = await client.post(
        org.path(f"/teams/{team_id}/members"), json={"user_id": str(uuid.uuid4())}, headers=org.owner.headers
    )
    bad_role = await client.post(
        org.path(f"/teams/{team_id}/members"),
        json={"user_id": org.owner.user_id, "role": "owner"},
        headers=org.owner.headers,
    )

    assert (stranger.status_code, stranger.json()["code"]) == (404, "not_found")
    assert nobody.status_code == 404
    assert bad_role.status_code == 422
    assert elsewhere.slug not in stranger.text


async def test_another_organizations_team_is_not_found(client: httpx.AsyncClient, platform: Platform) -> None:
    mine = await create_org(client)
    theirs = await create_org(client)
    their_team = await create_team(client, theirs, name="Secret Squad")
    await client.post(
        theirs.path(f"/teams/{their_team}/members"),
        json={"user_id": theirs.owner.user_id},
        headers=theirs.owner.headers,
    )
    member_body = {"user_id": mine.owner.user_id}

    attempts = [
        ("GET", f"/teams/{their_team}", None),
        ("PATCH", f"/teams/{their_team}", {"name": "Mine now"}),
        ("DELETE", f"/teams/{their_team}", None),
        ("GET", f"/teams/{their_team}/members", None),
        ("POST", f"/teams/{their_team}/members", member_body),
        ("DELETE", f"/teams/{their_team}/members/{theirs.owner.user_id}", None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, mine.path(path), json=body, headers=mine.owner.headers)
        assert (response.status_code, response.json()["code"]) == (404, "not_found"), (method, path)
        assert "Secret Squad" not in response.text
        assert theirs.owner.email not in response.text
    listed = await client.get(mine.path("/teams"), headers=mine.owner.headers)
    still = await client.get(theirs.path(f"/teams/{their_team}/members"), headers=theirs.owner.headers)

    assert listed.json()["items"] == []
    assert [m["user_id"] for m in still.json()["items"]] == [theirs.owner.user_id]


async def test_members_read_teams_but_only_managers_and_maintainers_change_them(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org = await create_org(client)
    maintainer = await add_member(client, org, platform)
    plain = await add_member(client, org, platform)
    newcomer = await add_member(client, org, platform)
    team_id, other_team = await create_team(client, org, name="Web"), await create_team(client, org, name="Data")
    await client.post(
        org.path(f"/teams/{team_id}/members"),
        json={"user_id": maintainer.user_id, "role": "maintainer"},
        headers=org.owner.headers,
    )
    await client.post(org.path(f"/teams/{team_id}/members"), json={"user_id": plain.user_id}, headers=org.owner.headers)

    readable = await client.get(org.path("/teams"), headers=plain.headers)
    create = await client.post(org.path("/teams"), json={"name": "Mine"}, headers=maintainer.headers)
    rename = await client.patch(org.path(f"/teams/{team_id}"), json={"name": "X"}, headers=maintainer.headers)
    by_plain = await client.post(
        org.path(f"/teams/{team_id}/members"), json={"user_id": newcomer.user_id}, headers=plain.headers
    )
    by_maintainer = await client.post(
        org.path(f"/teams/{team_id}/members"), json={"user_id": newcomer.user_id}, headers=maintainer.headers
    )
    other = await client.post(
        org.path(f"/teams/{other_team}/members"), json={"user_id": newcomer.user_id}, headers=maintainer.headers
    )
    removed = await client.delete(org.path(f"/teams/{team_id}/members/{plain.user_id}"), headers=maintainer.headers)
    left = await client.delete(org.path(f"/teams/{team_id}/members/{newcomer.user_id}"), headers=newcomer.headers)

    assert readable.status_code == 200
    assert [r.status_code for r in (create, rename, by_plain, other)] == [403, 403, 403, 403]
    assert by_plain.json()["code"] == "forbidden"
    assert by_maintainer.status_code == 201
    assert (removed.status_code, left.status_code) == (204, 204)


async def test_an_api_key_needs_teams_manage(client: httpx.AsyncClient) -> None:
    org = await create_org(client)
    reader = (await create_api_key(client, org, role="viewer"))["key"]
    manager = (await create_api_key(client, org, permissions=["teams.manage", "teams.read"]))["key"]

    refused = await client.post(org.path("/teams"), json={"name": "Bots"}, headers=bearer(reader))
    made = await client.post(org.path("/teams"), json={"name": "Bots"}, headers=bearer(manager))
    listed = await client.get(org.path("/teams"), headers=bearer(reader))

    assert refused.status_code == 403
    assert made.status_code == 201
    assert [t["name"] for t in listed.json()["items"]] == ["Bots"]


async def test_leaving_the_organization_leaves_its_teams(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    member = await add_member(client, org, platform)
    team_id = await create_team(client, org)
    await client.post(
        org.path(f"/teams/{team_id}/members"), json={"user_id": member.user_id}, headers=org.owner.headers
    )

    left = await client.delete(org.path(f"/members/{member.user_id}"), headers=member.headers)
    members = await client.get(org.path(f"/teams/{team_id}/members"), headers=org.owner.headers)
    team = await client.get(org.path(f"/teams/{team_id}"), headers=org.owner.headers)

    assert left.status_code == 204
    assert members.json()["items"] == []
    assert team.json()["member_count"] == 0


async def test_deleting_a_team_keeps_its_members_in_the_organization(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org = await create_org(client)
    member = await add_member(client, org, platform)
    team_id = await create_team(client, org)
    await client.post(
        org.path(f"/teams/{team_id}/members"), json={"user_id": member.user_id}, headers=org.owner.headers
    )

    deleted = await client.delete(org.path(f"/teams/{team_id}"), headers=org.owner.headers)
    members = await client.get(org.path("/members"), headers=org.owner.headers)

    assert deleted.status_code == 204
    assert member.user_id in {m["user_id"] for m in members.json()["items"]}
