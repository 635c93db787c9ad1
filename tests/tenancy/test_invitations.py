"""Invitations: mailed single-use tokens, and every way of misusing one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import httpx
from sqlalchemy import update

from tenantry.core.clock import utcnow
from tenantry.db import scope
from tenantry.platform import Platform
from tenantry.tenancy.models import Invitation
from tests.factories.identity import new_email, signed_in
from tests.factories.tenancy import (
    Org,
    add_member,
    bearer,
    create_api_key,
    create_org,
    create_role,
    create_team,
    invite,
    org_events,
    verified,
)
from tests.mailsink import MailSink

ACCEPT = "/v1/invitations/accept"


async def accept(client: httpx.AsyncClient, token: str, headers: dict[str, str]) -> httpx.Response:
    return await client.post(ACCEPT, json={"token": token}, headers=headers)


async def expire(platform: Platform, org: Org, invitation_id: object) -> None:
    """Move the invitation's expiry into the past, as time would."""
    async with platform.db.transaction() as tx:
        await scope.to_org(tx, uuid.UUID(org.id))
        await tx.execute(
            update(Invitation)
            .where(Invitation.id == uuid.UUID(str(invitation_id)))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


async def test_an_invitation_is_mailed_and_accepted_into_the_organization_and_its_teams(
    client: httpx.AsyncClient, platform: Platform, mail: MailSink
) -> None:
    org = await create_org(client)
    team_id = await create_team(client, org)
    guest = await verified(client, mail)

    made = await client.post(
        org.path("/invitations"),
        json={"email": guest.email.upper(), "role": "viewer", "team_ids": [team_id]},
        headers=org.owner.headers,
    )
    token = await mail.await_token(guest.email, count=2)  # the first mail verified the address
    accepted = await accept(client, token, guest.headers)
    members = await client.get(org.path("/members"), headers=guest.headers)
    team = await client.get(org.path(f"/teams/{team_id}/members"), headers=guest.headers)
    listed = await client.get(org.path("/invitations"), headers=org.owner.headers)

    assert made.status_code == 201, made.text
    body = made.json()
    assert set(body) == {"id", "email", "role", "status", "team_ids", "created_at", "expires_at"}
    assert (body["role"], body["status"], body["team_ids"]) == ("viewer", "pending", [team_id])
    assert timedelta(days=6, hours=23) < datetime.fromisoformat(body["expires_at"]) - utcnow() <= timedelta(days=7)
    text = mail.to(guest.email)[1].get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert f"http://testserver/invitations/accept?token={token}" in text
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["org_id"] == org.id
    assert set(accepted.json()) == {"org_id", "user_id", "email", "name", "role", "joined_at"}
    assert (accepted.json()["user_id"], accepted.json()["role"]) == (guest.user_id, "viewer")
    assert (guest.email, "viewer") in {(m["email"], m["role"]) for m in members.json()["items"]}
    assert [(m["user_id"], m["role"]) for m in team.json()["items"]] == [(guest.user_id, "member")]
    assert [i["status"] for i in listed.json()["items"]] == ["accepted"]
    invitation_target = {"type": "invitation", "id": body["id"]}
    assert [e["target"] for e in await org_events(platform, org, "invitation.created")] == [invitation_target]
    assert [e["target"] for e in await org_events(platform, org, "invitation.accepted")] == [invitation_target]
    joined = await org_events(platform, org, "organization.member_added")
    assert {"user_id": guest.user_id, "role": "viewer"} in [e["member"] for e in joined]
    assert [e["member"] for e in await org_events(platform, org, "team.member_added")] == [
        {"user_id": guest.user_id, "role": "member"}
    ]


async def test_a_token_works_once(client: httpx.AsyncClient, mail: MailSink) -> None:
    org = await create_org(client)
    guest = await verified(client, mail)
    await invite(client, org, guest.email)
    token = await mail.await_token(guest.email, count=2)

    first = await accept(client, token, guest.headers)
    second = await accept(client, token, guest.headers)
    unknown = await accept(client, "x" * 43, guest.headers)

    assert first.status_code == 200
    assert (second.status_code, second.json()["code"]) == (410, "invitation_invalid")
    assert (unknown.status_code, unknown.json()["code"]) == (410, "invitation_invalid")


async def test_two_accepts_at_once_make_one_membership(
    client: httpx.AsyncClient, platform: Platform, mail: MailSink
) -> None:
    org = await create_org(client)
    guest = await verified(client, mail)
    await invite(client, org, guest.email)
    token = await mail.await_token(guest.email, count=2)
    owner_data = {"user_id": org.owner.user_id, "role": "owner"}

    answers = await asyncio.gather(*(accept(client, token, guest.headers) for _ in range(4)))
    statuses = sorted(a.status_code for a in answers)

    assert statuses[0] == 200
    assert set(statuses[1:]) <= {409, 410}  # already a member, or the invitation already spent
    assert len(await org_events(platform, org, "invitation.accepted")) == 1
    joined = [e for e in await org_events(platform, org, "organization.member_added") if e["member"] != owner_data]
    assert len(joined) == 1


async def test_someone_signed_in_with_another_address_cannot_accept(client: httpx.AsyncClient, mail: MailSink) -> None:
    org = await create_org(client)
    email = new_email()
    await invite(client, org, email)
    token = await mail.await_token(email)
    intruder = await verified(client, mail)

    response = await accept(client, token, intruder.headers)
    rightful = await verified(client, mail, email=email)
    later = await accept(client, token, rightful.headers)

    assert (response.status_code, response.json()["code"]) == (403, "invitation_email_mismatch")
    assert org.slug not in response.text
    assert later.status_code == 200


async def test_an_unverified_address_cannot_accept(client: httpx.AsyncClient, mail: MailSink) -> None:
    org = await create_org(client)
    guest = await signed_in(client)  # mailed a verification token, never used
    await invite(client, org, guest.email)
    token = await mail.await_token(guest.email, count=2)

    response = await accept(client, token, guest.headers)

    assert (response.status_code, response.json()["code"]) == (403, "email_not_verified")


async def test_a_revoked_invitation_is_dead(client: httpx.AsyncClient, platform: Platform, mail: MailSink) -> None:
    org = await create_org(client)
    guest = await verified(client, mail)
    made = await invite(client, org, guest.email)
    token = await mail.await_token(guest.email, count=2)

    revoked = await client.delete(org.path(f"/invitations/{made['id']}"), headers=org.owner.headers)
    again = await client.delete(org.path(f"/invitations/{made['id']}"), headers=org.owner.headers)
    response = await accept(client, token, guest.headers)
    listed = await client.get(org.path("/invitations"), headers=org.owner.headers)

    assert revoked.status_code == 204
    assert again.status_code == 404
    assert (response.status_code, response.json()["code"]) == (410, "invitation_invalid")
    assert [i["status"] for i in listed.json()["items"]] == ["revoked"]
    assert [e["target"]["id"] for e in await org_events(platform, org, "invitation.revoked")] == [made["id"]]


async def test_an_expired_invitation_is_gone_until_resent(
    client: httpx.AsyncClient, platform: Platform, mail: MailSink
) -> None:
    org = await create_org(client)
    guest = await verified(client, mail)
    made = await invite(client, org, guest.email)
    token = await mail.await_token(guest.email, count=2)
    await expire(platform, org, made["id"])

    response = await accept(client, token, guest.headers)
    listed = await client.get(org.path("/invitations"), headers=org.owner.headers)
    resent = await client.post(org.path(f"/invitations/{made['id']}/resend"), headers=org.owner.headers)
    fresh = await mail.await_token(guest.email, count=3)
    old = await accept(client, token, guest.headers)
    new = await accept(client, fresh, guest.headers)

    assert (response.status_code, response.json()["code"]) == (410, "invitation_expired")
    assert [i["status"] for i in listed.json()["items"]] == ["expired"]
    assert resent.status_code == 200, resent.text
    assert (resent.json()["id"], resent.json()["status"]) == (made["id"], "pending")
    assert resent.json()["expires_at"] > str(made["expires_at"])
    assert fresh != token
    assert (old.status_code, old.json()["code"]) == (410, "invitation_invalid")
    assert new.status_code == 200


async def test_after_a_resend_only_the_new_token_works(client: httpx.AsyncClient, mail: MailSink) -> None:
    org = await create_org(client)
    guest = await verified(client, mail)
    made = await invite(client, org, guest.email)
    token = await mail.await_token(guest.email, count=2)

    resent = await client.post(org.path(f"/invitations/{made['id']}/resend"), headers=org.owner.headers)
    fresh = await mail.await_token(guest.email, count=3)
    old = await accept(client, token, guest.headers)
    new = await accept(client, fresh, guest.headers)
    spent = await client.post(org.path(f"/invitations/{made['id']}/resend"), headers=org.owner.headers)

    assert resent.status_code == 200
    assert (old.status_code, old.json()["code"]) == (410, "invitation_invalid")
    assert new.status_code == 200
    assert spent.status_code == 404


async def test_inviting_again_replaces_the_open_invitation(client: httpx.AsyncClient, mail: MailSink) -> None:
    org = await create_org(client)
    guest = await verified(client, mail)
    first = await invite(client, org, guest.email)
    old = await mail.await_token(guest.email, count=2)

    second = await invite(client, org, guest.email, role="viewer")
    new = await mail.await_token(guest.email, count=3)
    listed = await client.get(org.path("/invitations"), headers=org.owner.headers)
    with_old = await accept(client, old, guest.headers)
    with_new = await accept(client, new, guest.headers)

    assert [(i["id"], i["status"]) for i in listed.json()["items"]] == [
        (first["id"], "revoked"),
        (second["id"], "pending"),
    ]
    assert (with_old.status_code, with_old.json()["code"]) == (410, "invitation_invalid")
    assert (with_new.status_code, with_new.json()["role"]) == (200, "viewer")


async def test_a_member_is_neither_invited_nor_accepted_twice(
    client: httpx.AsyncClient, platform: Platform, mail: MailSink
) -> None:
    org = await create_org(client)
    member = await add_member(client, org, platform)
    invited = await client.post(
        org.path("/invitations"), json={"email": member.email.upper(), "role": "member"}, headers=org.owner.headers
    )
    guest = await verified(client, mail)
    await invite(client, org, guest.email)
    token = await mail.await_token(guest.email, count=2)
    await client.patch(org.path(), json={"allowed_email_domains": ["example.com"]}, headers=org.owner.headers)
    joined = await client.post(org.path("/join"), headers=guest.headers)  # in by another door meanwhile

    response = await accept(client, token, guest.headers)

    assert (invited.status_code, invited.json()["code"]) == (409, "already_member")
    assert joined.status_code == 200, joined.text
    assert (response.status_code, response.json()["code"]) == (409, "already_member")


async def test_nobody_invites_with_more_than_they_hold(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    admin = await add_member(client, org, platform, role="admin")
    member = await add_member(client, org, platform)

    as_owner = await client.post(
        org.path("/invitations"), json={"email": new_email(), "role": "owner"}, headers=admin.headers
    )
    as_admin = await client.post(
        org.path("/invitations"), json={"email": new_email(), "role": "admin"}, headers=admin.headers
    )
    unknown = await client.post(
        org.path("/invitations"), json={"email": new_email(), "role": "emperor"}, headers=org.owner.headers
    )
    by_member = await client.post(
        org.path("/invitations"), json={"email": new_email(), "role": "viewer"}, headers=member.headers
    )
    member_lists = await client.get(org.path("/invitations"), headers=member.headers)
    not_an_email = await client.post(
        org.path("/invitations"), json={"email": "nobody", "role": "viewer"}, headers=org.owner.headers
    )

    assert (as_owner.status_code, as_owner.json()["code"]) == (403, "forbidden")
    assert as_admin.status_code == 201
    assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_role")
    assert (by_member.status_code, by_member.json()["code"]) == (403, "forbidden")
    assert member_lists.status_code == 403
    assert not_an_email.status_code == 422


async def test_an_admin_cannot_revoke_or_resend_an_owners_invitation(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org = await create_org(client)
    admin = await add_member(client, org, platform, role="admin")
    made = await invite(client, org, new_email(), role="owner")

    revoked = await client.delete(org.path(f"/invitations/{made['id']}"), headers=admin.headers)
    resent = await client.post(org.path(f"/invitations/{made['id']}/resend"), headers=admin.headers)

    assert (revoked.status_code, resent.status_code) == (403, 403)


async def test_teams_of_another_organization_cannot_be_promised(client: httpx.AsyncClient) -> None:
    org = await create_org(client)
    other = await create_org(client)
    their_team = await create_team(client, other)

    response = await client.post(
        org.path("/invitations"),
        json={"email": new_email(), "role": "member", "team_ids": [their_team]},
        headers=org.owner.headers,
    )

    assert (response.status_code, response.json()["code"]) == (404, "not_found")


async def test_a_team_deleted_since_is_skipped_on_accept(client: httpx.AsyncClient, mail: MailSink) -> None:
    org = await create_org(client)
    kept, dropped = await create_team(client, org, name="Kept"), await create_team(client, org, name="Dropped")
    guest = await verified(client, mail)
    await invite(client, org, guest.email, team_ids=[kept, dropped])
    token = await mail.await_token(guest.email, count=2)
    await client.delete(org.path(f"/teams/{dropped}"), headers=org.owner.headers)

    response = await accept(client, token, guest.headers)
    teams = await client.get(org.path("/teams"), headers=guest.headers)

    assert response.status_code == 200, response.text
    assert [(t["name"], t["member_count"]) for t in teams.json()["items"]] == [("Kept", 1)]


async def test_another_organizations_invitation_is_not_found(
    client: httpx.AsyncClient, platform: Platform, mail: MailSink
) -> None:
    mine = await create_org(client)
    theirs = await create_org(client)
    email = new_email()
    made = await invite(client, theirs, email)

    revoke = await client.delete(mine.path(f"/invitations/{made['id']}"), headers=mine.owner.headers)
    resend = await client.post(mine.path(f"/invitations/{made['id']}/resend"), headers=mine.owner.headers)
    listed = await client.get(mine.path("/invitations"), headers=mine.owner.headers)
    foreign = await client.get(theirs.path("/invitations"), headers=mine.owner.headers)

    for response in (revoke, resend, foreign):
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
        assert email not in response.text
    assert listed.json()["items"] == []
    await mail.await_token(email)
    await platform.drain()
    assert len(mail.to(email)) == 1  # the refused resend mailed nothing


async def test_an_api_key_invites_but_cannot_accept(client: httpx.AsyncClient, mail: MailSink) -> None:
    org = await create_org(client)
    viewer = ["org.read", "members.read", "teams.read"]
    key = (await create_api_key(client, org, permissions=["invitations.manage", *viewer]))["key"]

    made = await client.post(
        org.path("/invitations"), json={"email": new_email(), "role": "viewer"}, headers=bearer(key)
    )
    too_strong = await client.post(
        org.path("/invitations"), json={"email": new_email(), "role": "member"}, headers=bearer(key)
    )
    accepted = await accept(client, "x" * 43, bearer(key))

    assert made.status_code == 201
    assert too_strong.status_code == 403  # a member also reads roles: the key cannot
    assert (accepted.status_code, accepted.json()["code"]) == (403, "forbidden")


async def test_an_invitation_to_a_role_deleted_since_makes_no_member(client: httpx.AsyncClient, mail: MailSink) -> None:
    org = await create_org(client)
    await create_role(client, org, "auditor", ["audit.read"])
    guest = await verified(client, mail)
    await invite(client, org, guest.email, role="auditor")
    token = await mail.await_token(guest.email, count=2)
    deleted = await client.delete(org.path("/roles/auditor"), headers=org.owner.headers)

    response = await accept(client, token, guest.headers)
    members = await client.get(org.path("/members"), headers=org.owner.headers)

    assert deleted.status_code == 204
    assert (response.status_code, response.json()["code"]) == (410, "invitation_invalid")
    assert guest.user_id not in {m["user_id"] for m in members.json()["items"]}
