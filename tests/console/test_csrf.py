"""Forged requests: a form or fetch that did not come from a console page changes nothing."""

from __future__ import annotations

import httpx
import pytest

from tenantry.platform import Platform
from tests.console.forms import SESSION, set_cookies, signed_in, token
from tests.factories.identity import signup


async def _name(client: httpx.AsyncClient) -> str:
    page = (await client.get("/account")).text
    return page.split('id="profile-name" name="name" type="text" value="', 1)[1].split('"', 1)[0]


@pytest.mark.parametrize(
    ("fields", "headers"),
    [
        pytest.param({}, {}, id="no token"),
        pytest.param({"csrf_token": "a-token-of-the-attackers-own"}, {}, id="wrong token"),
        pytest.param({"csrf_token": ""}, {}, id="empty token"),
    ],
)
async def test_a_form_without_the_right_token_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, fields: dict[str, str], headers: dict[str, str]
) -> None:
    await signed_in(client)
    before = await _name(client)

    response = await client.post("/account/profile", data={"name": "Mallory", **fields}, headers=headers)

    assert response.status_code == 403
    assert "Request refused" in response.text
    assert "nothing was changed" in response.text
    assert await _name(client) == before != "Mallory"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Origin": "https://evil.example"}, id="foreign origin"),
        pytest.param({"Origin": "null"}, id="opaque origin"),
        pytest.param({"Sec-Fetch-Site": "cross-site"}, id="cross-site fetch"),
        pytest.param({"Sec-Fetch-Site": "same-site"}, id="sibling subdomain"),
    ],
)
async def test_a_request_from_another_site_is_refused_even_with_the_right_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """A cookie a sibling site managed to plant (or a leaked token) is not enough on its own."""
    await signed_in(client)
    before = await _name(client)

    response = await client.post(
        "/account/profile", data={"name": "Mallory", "csrf_token": await token(client, "/account")}, headers=headers
    )

    assert response.status_code == 403
    assert await _name(client) == before


async def test_the_same_origin_with_the_right_token_is_accepted(client: httpx.AsyncClient) -> None:
    await signed_in(client)

    response = await client.post(
        "/account/profile",
        data={"name": "Ann Renamed", "csrf_token": await token(client, "/account")},
        headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
    )

    assert response.status_code == 303
    assert await _name(client) == "Ann Renamed"


async def test_a_forged_sign_in_form_signs_no_one_in(client: httpx.AsyncClient) -> None:
    """Login CSRF: another site must not sign a visitor into the attacker's account."""
    account = await signup(client)

    response = await client.post("/", data={"email": account.email, "password": account.password})

    assert response.status_code == 403
    assert SESSION not in set_cookies(response)


async def test_a_forged_sign_out_does_not_end_the_session(client: httpx.AsyncClient, platform: Platform) -> None:
    await signed_in(client)

    response = await client.post("/logout")

    assert response.status_code == 403
    await platform.auth.authenticate_cookie(client.cookies[SESSION])  # still alive


async def test_the_scripts_json_calls_need_the_token_header(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    csrf = await token(client, "/account")

    forged = await client.post("/account/passkeys/options", json={})
    genuine = await client.post("/account/passkeys/options", json={}, headers={"X-CSRF-Token": csrf})

    assert forged.status_code == 403
    assert "could not be verified" in forged.json()["message"]
    assert genuine.status_code == 200, genuine.text
    assert genuine.json()["challenge"]


async def test_a_forged_passkey_registration_is_refused_before_anything_is_verified(client: httpx.AsyncClient) -> None:
    await signed_in(client)

    response = await client.post("/account/passkeys", json={"credential": {"id": "x"}, "name": "Evil key"})

    assert response.status_code == 403
    assert "Evil key" not in (await client.get("/account")).text
