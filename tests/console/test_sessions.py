"""The console's session cookie: how it is set, what it opens, and how it ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tenantry.app import create_app
from tenantry.core.errors import Unauthorized
from tenantry.platform import Platform
from tenantry.settings import Settings
from tests.console.forms import SESSION, another_browser, set_cookies, sign_in, signed_in, submit, token
from tests.factories.identity import signup


async def test_signing_in_sets_an_http_only_lax_session_cookie_that_ends_with_the_session(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    account = await signup(client)

    response = await sign_in(client, account)

    assert response.headers["location"] == "/account"
    cookie = set_cookies(response)[SESSION]
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    assert "secure" not in attributes  # served over http here
    assert any(part.startswith("expires=") for part in attributes)
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert (await platform.auth.authenticate_cookie(value)).user.email == account.email
    page = await client.get("/account")
    assert page.status_code == 200
    assert account.email in page.text


@pytest.fixture
async def https_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"base_url": "https://console.example"}), access_log=False)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="https://console.example") as http:
            yield http


async def test_over_https_the_cookies_are_secure_and_host_prefixed(https_client: httpx.AsyncClient) -> None:
    account = await signup(https_client)
    page = await https_client.get("/")

    response = await https_client.post(
        "/",
        data={"csrf_token": https_client.cookies["__Host-tenantry_csrf"], "email": account.email,
              "password": account.password},
    )  # fmt: skip

    assert "secure" in [p.strip().lower() for p in set_cookies(page)["__Host-tenantry_csrf"].split(";")]
    cookie = set_cookies(response)[f"__Host-{SESSION}"]
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "Path=/" in cookie
    assert "Domain" not in cookie
    assert (await https_client.get("/account")).status_code == 200


async def test_pages_that_need_a_session_send_a_browser_without_one_to_sign_in(client: httpx.AsyncClient) -> None:
    response = await client.get("/account")

    assert response.status_code == 303
    assert response.headers["location"] == "/"


async def test_a_made_up_session_cookie_opens_nothing_and_is_cleared(client: httpx.AsyncClient) -> None:
    client.cookies.set(SESSION, "cs_made-up")

    response = await client.get("/account")

    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert 'tenantry_session=""' in set_cookies(response)[SESSION]


async def test_signing_out_revokes_the_session_on_the_server_and_clears_the_cookie(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    await signed_in(client)
    cookie = client.cookies[SESSION]

    response = await submit(client, "/logout", {}, page="/account")

    assert response.status_code == 303
    assert response.headers["location"] == "/?done=signed_out"
    assert 'tenantry_session=""' in set_cookies(response)[SESSION]
    with pytest.raises(Unauthorized):
        await platform.auth.authenticate_cookie(cookie)
    client.cookies.set(SESSION, cookie)  # a copy of the cookie kept from before is worth nothing now
    assert (await client.get("/account")).status_code == 303
    assert "You are signed out." in (await client.get("/?done=signed_out")).text


async def test_a_session_revoked_from_another_device_stops_at_once(app: FastAPI, client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    async with another_browser(app, "127.0.0.2") as other:
        await sign_in(other, account)
        page = (await client.get("/account")).text
        assert page.count('action="/account/sessions/') == 1  # the other device; this one signs out instead
        other_id = page.split('action="/account/sessions/', 1)[1].split("/", 1)[0]

        revoked = await client.post(
            f"/account/sessions/{other_id}/revoke", data={"csrf_token": await token(client, "/account")}
        )

        assert revoked.status_code == 303
        assert revoked.headers["location"] == "/account?done=session_revoked"
        assert (await other.get("/account")).status_code == 303
        assert (await client.get("/account")).status_code == 200


async def test_someone_elses_session_cannot_be_revoked(
    app: FastAPI, client: httpx.AsyncClient, platform: Platform
) -> None:
    await signed_in(client)
    stranger = await signup(client)
    async with another_browser(app, "127.0.0.3") as theirs:
        await sign_in(theirs, stranger)
        principal = await platform.auth.authenticate_cookie(theirs.cookies[SESSION])

        response = await submit(client, f"/account/sessions/{principal.session_id}/revoke", {}, page="/account")

        assert response.status_code == 404
        assert "no longer exists" in response.text
        assert (await theirs.get("/account")).status_code == 200
