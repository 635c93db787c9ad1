"""Organizations and members: the contract, the last-owner rule and role escalation."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tenantry.platform import Platform
from tests.factories.identity import enable_totp, signed_in
from tests.factories.tenancy import add_member, bearer, create_api_key, create_org, org_events, verified
from tests.mailsink import MailSink


async def test_creating_an_organization_makes_the_caller_its_owner(client: httpx.AsyncClient) -> None:
    owner = await signed_in(client)

    created = await client.post("/v1/orgs", json={"name": "Acme Labs", "slug": "acme-labs"}, headers=owner.headers)
    mine = await client.get("/v1/orgs", headers=owner.headers)

    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) >= {"id", "name", "slug", "created_at"}
    assert (body["name"], body["slug"]) == ("Acme Labs", "acme-labs")
    assert mine.json() == {
        "items": [{"id": body["id"], "name": "Acme Labs", "slug": "acme-labs", "role": "owner"}],
        "next_cursor": None,
    }


async def test_a_taken_slug_is_a_conflict_and_a_missing_one_is_made_from_the_name(client: httpx.AsyncClient) -> None:
    owner = await signed_in(client)
    await client.post("/v1/orgs", json={"name": "A", "slug": "taken"}, headers=owner.headers)

    again = await client.post("/v1/orgs", json={"name": "B", "slug": "taken"}, headers=owner.headers)
    first = await client.post("/v1/orgs", json={"name": "Blue Sky Inc."}, headers=owner.headers)
    second = await client.post("/v1/orgs", json={"name": "Blue Sky Inc."}, headers=owner.headers)

    assert again.status_code == 409
    assert again.json()["code"] == "slug_taken"
    assert first.json()["slug"] == "blue-sky-inc"
    assert second.json()["slug"].startswith("blue-sky-inc-")


async def test_members_are_listed_with_their_roles(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    member = await add_member(client, org, platform, role="viewer")

    response = await client.get(org.path("/members"), headers=member.headers)

    assert response.status_code == 200
    items = response.json()["items"]
    assert {(m["email"], m["role"]) for m in items} == {(org.owner.email, "owner"), (member.email, "viewer")}
    assert set(items[0]) == {"user_id", "email", "name", "role", "joined_at"}


async def test_the_last_owner_can_be_neither_demoted_nor_removed(client: httpx.AsyncClient) -> None:
    org = await create_org(client)
    me = org.owner.user_id

    demoted = await client.patch(org.path(f"/members/{me}"), json={"role": "admin"}, headers=org.owner.headers)
    removed = await client.delete(org.path(f"/members/{me}"), headers=org.owner.headers)

    assert (demoted.status_code, demoted.json()["code"]) == (409, "last_owner")
    assert (removed.status_code, removed.json()["code"]) == (409, "last_owner")


async def test_a_member_cannot_grant_itself_admin(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    member = await add_member(client, org, platform)

    response = await client.patch(
        org.path(f"/members/{member.user_id}"), json={"role": "admin"}, headers=member.headers
    )

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


async def test_an_admin_cannot_make_an_owner_or_touch_one(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    admin = await add_member(client, org, platform, role="admin")
    other = await add_member(client, org, platform)

    promote = await client.patch(org.path(f"/members/{other.user_id}"), json={"role": "owner"}, headers=admin.headers)
    demote = await client.patch(
        org.path(f"/members/{org.owner.user_id}"), json={"role": "member"}, headers=admin.headers
    )
    remove = await client.delete(org.path(f"/members/{org.owner.user_id}"), headers=admin.headers)
    fine = await client.patch(org.path(f"/members/{other.user_id}"), json={"role": "viewer"}, headers=admin.headers)

    assert [r.status_code for r in (promote, demote, remove)] == [403, 403, 403]
    assert fine.status_code == 200
    assert fine.json()["role"] == "viewer"


async def test_only_an_owner_deletes_the_organization(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    admin = await add_member(client, org, platform, role="admin")

    refused = await client.delete(org.path(), headers=admin.headers)
    deleted = await client.delete(org.path(), headers=org.owner.headers)
    gone = await client.get(org.path(), headers=org.owner.headers)

    assert refused.status_code == 403
    assert deleted.status_code == 204
    assert gone.status_code == 404


async def test_another_organization_is_not_found_not_forbidden(client: httpx.AsyncClient) -> None:
    mine = await create_org(client)
    theirs = await create_org(client)

    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/members")]:
        response = await client.request(
            method, theirs.path(path), json={} if method == "PATCH" else None, headers=mine.owner.headers
        )
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "not_found"
        assert theirs.slug not in response.text


async def test_an_api_key_acts_in_its_organization_only_and_never_as_a_user(client: httpx.AsyncClient) -> None:
    org = await create_org(client)
    other = await create_org(client)
    key = (await create_api_key(client, org, role="viewer"))["key"]

    members = await client.get(org.path("/members"), headers=bearer(key))
    elsewhere = await client.get(other.path("/members"), headers=bearer(key))
    me = await client.get("/v1/me", headers=bearer(key))
    rename = await client.patch(org.path(), json={"name": "Hijacked"}, headers=bearer(key))

    assert str(key).startswith("tnt_")
    assert members.status_code == 200
    assert elsewhere.status_code == 404
    assert (me.status_code, me.json()["code"]) == (403, "forbidden")
    assert rename.status_code == 403


async def test_an_api_key_cannot_mint_a_stronger_key(client: httpx.AsyncClient) -> None:
    org = await create_org(client)
    key = (await create_api_key(client, org, permissions=["api_keys.manage", "api_keys.read", "org.read"]))["key"]

    stronger = await client.post(org.path("/api-keys"), json={"name": "x", "role": "admin"}, headers=bearer(key))
    same = await client.post(
        org.path("/api-keys"), json={"name": "y", "permissions": ["org.read"]}, headers=bearer(key)
    )

    assert stronger.status_code == 403
    assert same.status_code == 201


async def test_a_revoked_key_stops_at_once(client: httpx.AsyncClient) -> None:
    org = await create_org(client)
    made = await create_api_key(client, org)

    before = await client.get(org.path(), headers=bearer(made["key"]))
    revoked = await client.delete(org.path(f"/api-keys/{made['id']}"), headers=org.owner.headers)
    after = await client.get(org.path(), headers=bearer(made["key"]))
    listed = await client.get(org.path("/api-keys"), headers=org.owner.headers)

    assert before.status_code == 200
    assert revoked.status_code == 204
    assert after.status_code == 401
    assert listed.json()["items"] == []


async def test_require_mfa_asks_members_without_a_second_factor_to_set_one_up(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org = await create_org(client)
    await enable_totp(client, org.owner)
    member = await add_member(client, org, platform)

    turned_on = await client.patch(org.path(), json={"require_mfa": True}, headers=org.owner.headers)
    blocked = await client.get(org.path("/members"), headers=member.headers)
    owner_ok = await client.get(org.path("/members"), headers=org.owner.headers)

    assert turned_on.status_code == 200
    assert blocked.status_code == 403
    assert blocked.json()["code"] == "mfa_required"
    assert "/v1/me/mfa/totp/setup" in blocked.json()["detail"]
    assert owner_ok.status_code == 200


async def test_a_verified_user_at_an_allowed_domain_joins_with_the_default_role(
    client: httpx.AsyncClient, mail: MailSink
) -> None:
    org = await create_org(client)
    allowed = await client.patch(
        org.path(), json={"allowed_email_domains": ["@Joiners.Example"]}, headers=org.owner.headers
    )
    joiner = await verified(client, mail, email=f"ann-{uuid.uuid4().hex[:6]}@joiners.example")
    unverified = await signed_in(client, email=f"bob-{uuid.uuid4().hex[:6]}@joiners.example")
    outsider = await verified(client, mail)

    joined = await client.post(org.path("/join"), headers=joiner.headers)
    again = await client.post(org.path("/join"), headers=joiner.headers)
    not_verified = await client.post(org.path("/join"), headers=unverified.headers)
    other_domain = await client.post(org.path("/join"), headers=outsider.headers)

    assert allowed.json()["allowed_email_domains"] == ["joiners.example"]
    assert joined.status_code == 200, joined.text
    assert (joined.json()["user_id"], joined.json()["role"]) == (joiner.user_id, "member")
    assert (again.status_code, again.json()["code"]) == (409, "already_member")
    # Neither learns whether the organization exists: the same answer as for a made-up id.
    assert not_verified.status_code == other_domain.status_code == 404


@pytest.mark.parametrize("domains", [["not a domain"], ["example"], ["x" * 300 + ".com"]])
async def test_allowed_domains_must_be_domains(client: httpx.AsyncClient, domains: list[str]) -> None:
    org = await create_org(client)

    response = await client.patch(org.path(), json={"allowed_email_domains": domains}, headers=org.owner.headers)

    assert response.status_code == 422


async def test_organization_changes_are_events_on_the_outbox(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    member = await add_member(client, org, platform)
    await client.patch(org.path(), json={"name": "Renamed"}, headers=org.owner.headers)
    await client.patch(org.path(f"/members/{member.user_id}"), json={"role": "viewer"}, headers=org.owner.headers)
    await client.delete(org.path(f"/members/{member.user_id}"), headers=member.headers)  # leaving
    await client.delete(org.path(), headers=org.owner.headers)

    created = await org_events(platform, org, "organization.created")
    updated = await org_events(platform, org, "organization.updated")
    changed = await org_events(platform, org, "organization.member_updated")
    removed = await org_events(platform, org, "organization.member_removed")
    deleted = await org_events(platform, org, "organization.deleted")

    assert created[0]["organization"]["id"] == org.id
    assert updated[0]["changes"] == {"name": "Renamed"}
    assert changed[0]["member"] == {"user_id": member.user_id, "role": "viewer", "previous_role": "member"}
    assert removed[0]["target"] == {"type": "user", "id": member.user_id}
    assert deleted[0]["organization"]["name"] == "Renamed"
