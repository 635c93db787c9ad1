"""The webhook endpoints API: the contract (paths, fields, codes), validation, secrets, permissions and tenancy."""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest
from standardwebhooks import Webhook

from tenantry.platform import Platform
from tenantry.settings import Settings
from tests.factories.tenancy import Org, add_member, bearer, create_api_key, create_org, read_audit_log
from tests.webhooks.receiver import Receiver

URL = "http://127.0.0.1:9/hook"  # loopback, allowed by the test settings; nothing listens (port 9: discard)


async def add_endpoint(client: httpx.AsyncClient, org: Org, **body: object) -> dict[str, object]:
    response = await client.post(org.path("/webhooks"), json={"url": URL, **body}, headers=org.owner.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_event_types_list_every_event_with_a_schema_of_its_data(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/webhooks/event-types")

    assert response.status_code == 200
    items = {item["name"]: item for item in response.json()["items"]}
    for name in ("organization.member_added", "team.created", "user.created", "webhook.test", "endpoint.disabled"):
        assert items[name]["description"]
        assert items[name]["schema"]["type"] == "object"
    assert items["team.created"]["scope"] == "organization"
    assert items["session.created"]["scope"] == "user"
    assert "endpoint_id" in items["webhook.test"]["schema"]["properties"]


async def test_creating_an_endpoint_answers_its_secret_once_and_reads_never_show_it(client: httpx.AsyncClient) -> None:
    org = await create_org(client)

    created = await add_endpoint(client, org, description="Billing sync", headers={"X-Team": "billing"})

    assert created["enabled"] is True
    assert created["url"] == URL
    assert created["event_types"] is None
    secret = str(created["secret"])
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64
    read = await client.get(org.path(f"/webhooks/{created['id']}"), headers=org.owner.headers)
    assert read.status_code == 200
    assert "secret" not in read.json()
    assert secret not in read.text
    assert read.json()["headers"] == {"X-Team": "billing"}
    listed = await client.get(org.path("/webhooks"), headers=org.owner.headers)
    assert [e["id"] for e in listed.json()["items"]] == [created["id"]]
    assert secret not in listed.text
    again = await client.get(org.path(f"/webhooks/{created['id']}/secret"), headers=org.owner.headers)
    assert again.json() == {"secret": secret}


async def test_rotation_gives_a_new_secret_while_the_old_one_still_signs(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    org = await create_org(client)
    url = receiver.url("/rotating")
    created = await add_endpoint(client, org, url=url)

    rotated = await client.post(org.path(f"/webhooks/{created['id']}/rotate-secret"), headers=org.owner.headers)
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != created["secret"]
    assert new.startswith("whsec_")
    assert (await client.get(org.path(f"/webhooks/{created['id']}/secret"), headers=org.owner.headers)).json() == {
        "secret": new
    }
    sent = await client.post(org.path(f"/webhooks/{created['id']}/test"), headers=org.owner.headers)
    assert sent.status_code == 202
    await receiver.wait_for(lambda: sent.json()["event_id"] in receiver.ids("/rotating"), what="the test event")
    (request,) = [r for r in receiver.at("/rotating") if r.webhook_id == sent.json()["event_id"]]
    assert request.webhook_id == sent.json()["event_id"]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(request.body, request.headers)  # raises if it does not verify
    Webhook(str(created["secret"])).verify(request.body, request.headers)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://127.0.0.1/hook"}, "url"),
        ({"url": "http://user:pass@127.0.0.1/hook"}, "url"),
        ({"url": URL, "event_types": ["no.such_event"]}, "event_types"),
        ({"url": URL, "event_types": []}, "event_types"),
        ({"url": URL, "event_types": ["user.created"]}, "event_types"),  # about a user, not the organization
        ({"url": URL, "headers": {"webhook-signature": "v1,forged"}}, "headers"),
        ({"url": URL, "headers": {"Host": "elsewhere"}}, "headers"),
        ({"url": URL, "headers": {"X-Split": "a\r\nInjected: yes"}}, "headers"),
        ({"url": URL, "headers": {"Bad Name": "x"}}, "headers"),
        ({"url": URL, "headers": {"X-Bell": "a\x07b"}}, "headers"),  # a control character: no client sends it
        ({"url": "http://" + "a" * 64 + ".example/hook"}, "url"),  # a DNS label is at most 63 characters
        ({"url": URL, "rate_limit": 0}, "rate_limit"),
        ({"url": URL, "surprise": True}, "surprise"),
        ({"url": "x" * 3000}, "url"),
    ],
)
async def test_bad_endpoints_are_refused_with_the_field_named(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    org = await create_org(client)

    response = await client.post(org.path("/webhooks"), json=body, headers=org.owner.headers)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in response.text
    listed = await client.get(org.path("/webhooks"), headers=org.owner.headers)
    assert listed.json()["items"] == []


async def test_a_private_address_is_refused_as_unsafe_when_private_addresses_are_not_allowed(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org = await create_org(client)
    platform.webhooks.allow_private = False  # as in production

    response = await client.post(org.path("/webhooks"), json={"url": "http://10.0.0.1/hook"}, headers=org.owner.headers)

    assert response.status_code == 422
    assert response.json()["code"] == "unsafe_url"


async def test_updating_changes_only_what_is_named_and_can_disable(client: httpx.AsyncClient) -> None:
    org = await create_org(client)
    created = await add_endpoint(client, org, description="first", event_types=["team.created"])
    path = org.path(f"/webhooks/{created['id']}")

    changed = await client.patch(
        path, json={"event_types": ["team.created", "team.deleted"]}, headers=org.owner.headers
    )
    assert changed.status_code == 200
    assert changed.json()["event_types"] == ["team.created", "team.deleted"]
    assert changed.json()["description"] == "first"
    disabled = await client.patch(path, json={"enabled": False}, headers=org.owner.headers)
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "manual"
    test = await client.post(path + "/test", headers=org.owner.headers)
    assert test.status_code == 409
    assert test.json()["code"] == "endpoint_disabled"
    enabled = await client.patch(path, json={"enabled": True}, headers=org.owner.headers)
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabled_reason"] is None

    deleted = await client.delete(path, headers=org.owner.headers)
    assert deleted.status_code == 204
    assert (await client.get(path, headers=org.owner.headers)).status_code == 404


@pytest.mark.parametrize("field", ["url", "description", "enabled"])
async def test_a_null_for_a_field_that_cannot_be_empty_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, field: str
) -> None:
    org = await create_org(client)
    created = await add_endpoint(client, org, description="kept")
    path = org.path(f"/webhooks/{created['id']}")

    response = await client.patch(path, json={field: None, "event_types": ["team.created"]}, headers=org.owner.headers)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"
    assert field in response.text
    read = (await client.get(path, headers=org.owner.headers)).json()
    assert (read["url"], read["description"], read["enabled"], read["event_types"]) == (URL, "kept", True, None)


async def test_changes_to_endpoints_are_in_the_audit_log(client: httpx.AsyncClient, platform: Platform) -> None:
    org = await create_org(client)
    created = await add_endpoint(client, org)
    await client.post(org.path(f"/webhooks/{created['id']}/rotate-secret"), headers=org.owner.headers)
    await client.delete(org.path(f"/webhooks/{created['id']}"), headers=org.owner.headers)

    log = await read_audit_log(client, org, platform)

    actions = [entry["action"] for entry in log.json()["items"]]
    assert {"endpoint.created", "endpoint.secret_rotated", "endpoint.deleted"} <= set(actions)
    assert str(created["secret"]) not in log.text


async def test_members_may_not_see_secrets_and_viewers_may_not_manage(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org = await create_org(client)
    created = await add_endpoint(client, org)
    member = await add_member(client, org, platform, role="member")
    viewer_key = (await create_api_key(client, org, role="viewer"))["key"]

    for headers in (member.headers, bearer(viewer_key)):
        secret = await client.get(org.path(f"/webhooks/{created['id']}/secret"), headers=headers)
        assert secret.status_code == 403, secret.text
        assert str(created["secret"]) not in secret.text
        made = await client.post(org.path("/webhooks"), json={"url": URL}, headers=headers)
        assert made.status_code == 403
    read = await client.get(org.path(f"/webhooks/{created['id']}"), headers=member.headers)
    assert read.status_code == 200  # members see endpoints and their logs, never secrets
    hidden = await client.get(org.path(f"/webhooks/{created['id']}"), headers=bearer(viewer_key))
    assert hidden.status_code == 403


async def test_another_organizations_endpoint_is_not_found(client: httpx.AsyncClient) -> None:
    mine, theirs = await create_org(client), await create_org(client)
    endpoint = await add_endpoint(client, theirs)

    for method, rest in [
        ("GET", ""),
        ("GET", "/secret"),
        ("POST", "/rotate-secret"),
        ("POST", "/test"),
        ("GET", "/deliveries"),
        ("DELETE", ""),
    ]:
        response = await client.request(
            method, mine.path(f"/webhooks/{endpoint['id']}{rest}"), headers=mine.owner.headers
        )
        assert response.status_code == 404, (method, rest, response.text)
        assert str(endpoint["secret"]) not in response.text
    still = await client.get(theirs.path(f"/webhooks/{endpoint['id']}/secret"), headers=theirs.owner.headers)
    assert still.json() == {"secret": endpoint["secret"]}


async def test_unknown_endpoint_and_delivery_ids_are_not_found(client: httpx.AsyncClient) -> None:
    org = await create_org(client)
    endpoint = await add_endpoint(client, org)

    missing = await client.get(org.path(f"/webhooks/{uuid.uuid4()}"), headers=org.owner.headers)
    retry = await client.post(
        org.path(f"/webhooks/{endpoint['id']}/deliveries/{uuid.uuid4()}/retry"), headers=org.owner.headers
    )
    bad_status = await client.get(
        org.path(f"/webhooks/{endpoint['id']}/deliveries?status=lost"), headers=org.owner.headers
    )

    assert missing.status_code == 404
    assert retry.status_code == 404
    assert bad_status.status_code == 422


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Receivers here listen on loopback."""
    return settings.model_copy(update={"webhook_allow_private": True, "webhook_timeout_seconds": 5.0})


async def test_header_values_are_shown_only_to_those_who_may_manage_the_endpoint(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    org = await create_org(client)
    created = await add_endpoint(client, org, headers={"Authorization": "Bearer receiver-token"})
    member = await add_member(client, org, platform, role="member")

    as_member = await client.get(org.path(f"/webhooks/{created['id']}"), headers=member.headers)
    listed = await client.get(org.path("/webhooks"), headers=member.headers)
    as_owner = await client.get(org.path(f"/webhooks/{created['id']}"), headers=org.owner.headers)

    assert as_member.json()["headers"] == {"Authorization": "[redacted]"}
    assert "receiver-token" not in as_member.text
    assert "receiver-token" not in listed.text
    assert as_owner.json()["headers"] == {"Authorization": "Bearer receiver-token"}


async def test_a_stranger_gets_no_dns_lookup_and_a_refusal_does_not_say_where_a_name_points(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    from tests.webhooks.test_addresses import StubResolver

    mine, theirs = await create_org(client), await create_org(client)
    dns = StubResolver({"intranet.example": [["10.1.2.3"]]})
    platform.webhooks.allow_private, platform.webhooks.resolver = False, dns  # as in production

    stranger = await client.post(
        theirs.path("/webhooks"), json={"url": "http://intranet.example/hook"}, headers=mine.owner.headers
    )
    assert stranger.status_code == 404
    assert dns.lookups == []
    refused = await client.post(
        mine.path("/webhooks"), json={"url": "http://intranet.example/hook"}, headers=mine.owner.headers
    )
    assert refused.status_code == 422
    assert refused.json()["code"] == "unsafe_url"
    assert "10.1.2.3" not in refused.text
    assert dns.lookups == ["intranet.example"]
