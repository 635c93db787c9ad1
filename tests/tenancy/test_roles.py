"""Custom roles: the contract, escalation (nobody hands out more than they hold), roles that bite at once,
roles in use, and another organization's roles."""

from __future__ import annotations

import httpx

from tenantry.platform import Platform
from tenantry.tenancy import policy
from tests.factories.tenancy import add_member, bearer, create_api_key, create_org, create_role, read_audit_log


async def test_roles_are_listed_created_changed_and_deleted(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    headers = org.owner.headers

    created = await client.post(
        org.path("/roles"),
        json={"key": "auditor", "name": "Auditor", "permissions": ["audit.read", "org.read", "audit.read"]},
        headers=headers,
    )
    listed = await client.get(org.path("/roles"), headers=headers)
    changed = await client.patch(
        org.path("/roles/auditor"), json={"name": "Auditors", "permissions": ["audit.read"]}, headers=headers
    )
    deleted = await client.delete(org.path("/roles/auditor"), headers=headers)
    after = await client.get(org.path("/roles"), headers=headers)
    log = await read_audit_log(client, org, platform, limit=3)

    assert created.status_code == 201, created.text
    assert created.json() == {
        "key": "auditor",
        "name": "Auditor",
        "permissions": ["audit.read", "org.read"],
        "built_in": False,
    }
    built_in = [
        {"key": key, "name": name, "permissions": sorted(granted), "built_in": True}
        for key, (name, granted) in policy.BUILT_IN_ROLES.items()
    ]
    assert listed.status_code == 200
    assert listed.json() == {"items": [*built_in, created.json()]}
    assert [r["key"] for r in listed.json()["items"]] == ["owner", "admin", "member", "viewer", "auditor"]
    assert changed.status_code == 200
    assert changed.json() == {"key": "auditor", "name": "Auditors", "permissions": ["audit.read"], "built_in": False}
    assert deleted.status_code == 204
    assert after.json() == {"items": built_in}
    entries = log.json()["items"]
    assert [(e["action"], e["target"]) for e in entries] == [
        (action, {"type": "role", "id": "auditor"}) for action in ("role.deleted", "role.updated", "role.created")
    ]
    assert {e["actor"]["id"] for e in entries} == {org.owner.user_id}


async def test_a_role_key_is_new_and_well_formed_and_its_permissions_exist(client: httpx.AsyncClient) -> None:
    org = await create_org(client)
    await create_role(client, org, "auditor", ["audit.read"])

    def attempt(key: str, permissions: list[str]) -> dict[str, object]:
        return {"key": key, "name": "Some role", "permissions": permissions}

    answers = {
        case: await client.post(org.path("/roles"), json=body, headers=org.owner.headers)
        for case, body in {
            "built-in key": attempt("admin", ["org.read"]),
            "existing key": attempt("auditor", ["org.read"]),
            "upper case": attempt("Auditor2", ["org.read"]),
            "one letter": attempt("a", ["org.read"]),
            "starts with a digit": attempt("1st", ["org.read"]),
            "unknown permission": attempt("hacker", ["org.read", "root.everything"]),
        }.items()
    }

    assert {case: (r.status_code, r.json()["code"]) for case, r in answers.items()} == {
        "built-in key": (409, "role_exists"),
        "existing key": (409, "role_exists"),
        "upper case": (422, "validation_error"),
        "one letter": (422, "validation_error"),
        "starts with a digit": (422, "validation_error"),
        "unknown permission": (422, "validation_error"),
    }
    assert "root.everything" in answers["unknown permission"].json()["detail"]


async def test_built_in_roles_can_be_neither_changed_nor_deleted(client: httpx.AsyncClient) -> None:
    org = await create_org(client)

    changed = await client.patch(
        org.path("/roles/member"), json={"permissions": ["org.read"]}, headers=org.owner.headers
    )
    deleted = await client.delete(org.path("/roles/viewer"), headers=org.owner.headers)
    listed = await client.get(org.path("/roles"), headers=org.owner.headers)

    assert (changed.status_code, changed.json()["code"]) == (409, "role_built_in")
    assert (deleted.status_code, deleted.json()["code"]) == (409, "role_built_in")
    member = next(r for r in listed.json()["items"] if r["key"] == "member")
    assert member["permissions"] == sorted(policy.BUILT_IN_ROLES["member"][1])


async def test_a_member_cannot_create_roles_and_a_viewer_cannot_see_them(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org = await create_org(client)
    member = await add_member(client, org, platform, role="member")
    viewer = await add_member(client, org, platform, role="viewer")
    body = {"key": "mine", "name": "Mine", "permissions": ["org.read"]}

    created = await client.post(org.path("/roles"), json=body, headers=member.headers)
    seen = await client.get(org.path("/roles"), headers=member.headers)
    hidden = await client.get(org.path("/roles"), headers=viewer.headers)

    assert (created.status_code, created.json()["code"]) == (403, "forbidden")
    assert seen.status_code == 200
    assert (hidden.status_code, hidden.json()["code"]) == (403, "forbidden")


async def test_an_admin_cannot_hand_out_permissions_it_lacks(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    admin = await add_member(client, org, platform, role="admin")
    someone = await add_member(client, org, platform, role="viewer")
    await create_role(client, org, "ops", ["org.read", "org.update"])
    await create_role(client, org, "deleter", ["org.read", "org.delete"])

    created = await client.post(
        org.path("/roles"), json={"key": "escalate", "name": "E", "permissions": ["org.delete"]}, headers=admin.headers
    )
    widened = await client.patch(
        org.path("/roles/ops"), json={"permissions": ["org.read", "org.delete"]}, headers=admin.headers
    )
    assigned = await client.patch(
        org.path(f"/members/{someone.user_id}"), json={"role": "deleter"}, headers=admin.headers
    )
    narrowed = await client.patch(org.path("/roles/deleter"), json={"permissions": ["org.read"]}, headers=admin.headers)
    removed = await client.delete(org.path("/roles/deleter"), headers=admin.headers)
    fine = await client.patch(org.path("/roles/ops"), json={"permissions": ["org.read"]}, headers=admin.headers)
    roles = {
        r["key"]: r["permissions"]
        for r in (await client.get(org.path("/roles"), headers=admin.headers)).json()["items"]
    }

    for refused in (created, widened, assigned, narrowed, removed):
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), refused.request.url
    assert created.json()["missing"] == ["org.delete"]
    assert fine.status_code == 200
    assert "escalate" not in roles
    assert roles["ops"] == ["org.read"]
    assert roles["deleter"] == ["org.delete", "org.read"]


async def test_a_custom_role_grants_exactly_its_permissions(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    await create_role(client, org, "auditor", ["audit.read"])
    member = await add_member(client, org, platform, role="viewer")

    assigned = await client.patch(
        org.path(f"/members/{member.user_id}"), json={"role": "auditor"}, headers=org.owner.headers
    )
    audit = await client.get(org.path("/audit-log"), headers=member.headers)
    keys = await client.get(org.path("/api-keys"), headers=member.headers)
    org_itself = await client.get(org.path(), headers=member.headers)

    assert assigned.status_code == 200, assigned.text
    assert audit.status_code == 200
    assert (keys.status_code, keys.json()["code"]) == (403, "forbidden")
    assert org_itself.status_code == 403  # no org.read: the role carries nothing else


async def test_changing_a_role_bites_on_the_next_request(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    await create_role(client, org, "auditor", ["audit.read"])
    member = await add_member(client, org, platform, role="auditor")
    key = (await create_api_key(client, org, role="auditor"))["key"]

    before = [await client.get(org.path("/api-keys"), headers=h) for h in (member.headers, bearer(key))]
    await client.patch(
        org.path("/roles/auditor"), json={"permissions": ["audit.read", "api_keys.read"]}, headers=org.owner.headers
    )
    granted = [await client.get(org.path("/api-keys"), headers=h) for h in (member.headers, bearer(key))]
    await client.patch(org.path("/roles/auditor"), json={"permissions": []}, headers=org.owner.headers)
    taken = [await client.get(org.path("/audit-log"), headers=h) for h in (member.headers, bearer(key))]

    assert [r.status_code for r in before] == [403, 403]
    assert [r.status_code for r in granted] == [200, 200]
    assert [r.status_code for r in taken] == [403, 403]


async def test_a_role_in_use_cannot_be_deleted(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    await create_role(client, org, "auditor", ["audit.read"])
    member = await add_member(client, org, platform, role="auditor")
    key = await create_api_key(client, org, role="auditor")
    owner = org.owner.headers

    both = await client.delete(org.path("/roles/auditor"), headers=owner)
    await client.patch(org.path(f"/members/{member.user_id}"), json={"role": "viewer"}, headers=owner)
    key_only = await client.delete(org.path("/roles/auditor"), headers=owner)
    await client.delete(org.path(f"/api-keys/{key['id']}"), headers=owner)
    deleted = await client.delete(org.path("/roles/auditor"), headers=owner)

    assert (both.status_code, both.json()["code"]) == (409, "role_in_use")
    assert (both.json()["members"], both.json()["api_keys"]) == (1, 1)
    assert (key_only.status_code, key_only.json()["code"]) == (409, "role_in_use")
    assert (key_only.json()["members"], key_only.json()["api_keys"]) == (0, 1)
    assert deleted.status_code == 204


async def test_another_organizations_roles_are_not_found(client: httpx.AsyncClient) -> None:
    mine = await create_org(client)
    theirs = await create_org(client)
    await create_role(client, theirs, "secret-ops", ["org.read"])
    headers = mine.owner.headers

    answers = [
        await client.patch(mine.path("/roles/secret-ops"), json={"name": "Mine now"}, headers=headers),
        await client.delete(mine.path("/roles/secret-ops"), headers=headers),
        await client.get(theirs.path("/roles"), headers=headers),
        await client.post(
            theirs.path("/roles"), json={"key": "x-ops", "name": "X", "permissions": ["org.read"]}, headers=headers
        ),
        await client.patch(theirs.path("/roles/secret-ops"), json={"name": "Mine now"}, headers=headers),
        await client.delete(theirs.path("/roles/secret-ops"), headers=headers),
    ]
    assigned = await client.patch(
        mine.path(f"/members/{mine.owner.user_id}"), json={"role": "secret-ops"}, headers=headers
    )
    my_roles = await client.get(mine.path("/roles"), headers=headers)
    their_roles = await client.get(theirs.path("/roles"), headers=theirs.owner.headers)

    assert [(r.status_code, r.json()["code"]) for r in answers] == [(404, "not_found")] * len(answers)
    assert "secret-ops" not in answers[2].text
    assert assigned.status_code == 422  # unknown_role: no such role here
    assert "secret-ops" not in my_roles.text
    assert [r["name"] for r in their_roles.json()["items"] if r["key"] == "secret-ops"] == ["Secret Ops"]
