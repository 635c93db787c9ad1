"""Console pages: what every page carries, the routes it must not shadow, and the pages people reach
by mistake (bad links, half-filled forms), which all answer in words, never with a 500."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.console.forms import sign_in, signed_in, submit, token
from tests.factories.identity import PASSWORD, new_email, signup
from tests.mailsink import MailSink

PUBLIC_PAGES = ["/", "/signup", "/forgot-password", "/reset-password?token=abc", "/verify-email?token=abc"]


def _assert_hardened(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    html = response.text
    assert re.search(r"<script(?![^>]*\ssrc=)", html) is None, "inline script"
    assert "<style" not in html
    assert " style=" not in html
    assert re.search(r"\son[a-z]+=", html) is None, "inline event handler"


@pytest.mark.parametrize("path", PUBLIC_PAGES)
async def test_public_pages_carry_the_security_headers_and_no_inline_code(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code in (200, 400)
    _assert_hardened(response)


async def test_account_pages_carry_them_too(client: httpx.AsyncClient) -> None:
    await signed_in(client)

    _assert_hardened(await client.get("/account"))
    _assert_hardened(await submit(client, "/account/mfa/totp/setup", {}, page="/account"))


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/healthz", 200, "application/json"),
        ("/openapi.json", 200, "application/json"),
        ("/docs", 200, "text/html"),
        ("/.well-known/jwks.json", 200, "application/json"),
        ("/v1/me", 401, "application/problem+json"),
        ("/v1/nothing-here", 404, "application/problem+json"),
    ],
)
async def test_the_console_shadows_no_api_route(client: httpx.AsyncClient, path: str, status: int, kind: str) -> None:
    response = await client.get(path)

    assert response.status_code == status
    assert response.headers["content-type"].startswith(kind)


async def test_the_stylesheet_and_script_are_served(client: httpx.AsyncClient) -> None:
    css = await client.get("/console/static/console.css")
    js = await client.get("/console/static/console.js")

    assert css.status_code == js.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "javascript" in js.headers["content-type"]


async def test_the_console_is_left_out_of_the_api_description(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert all(path.startswith(("/v1", "/healthz", "/readyz", "/.well-known")) for path in paths)


# -- sign-in and sign-up mistakes ---------------------------------------------------------------------------
async def test_a_wrong_password_says_so_keeps_the_email_and_never_echoes_the_password(
    client: httpx.AsyncClient,
) -> None:
    account = await signup(client)

    response = await submit(client, "/", {"email": account.email, "password": "my secret guess 42"})

    assert response.status_code == 401
    assert "don&#39;t match an account" in response.text
    assert f'value="{account.email}"' in response.text
    assert "my secret guess 42" not in response.text
    assert "tenantry_session" not in response.headers.get("set-cookie", "")


async def test_signing_up_with_a_taken_email_or_a_weak_password_explains_why(client: httpx.AsyncClient) -> None:
    account = await signup(client)

    taken = await submit(client, "/signup", {"name": "Ann", "email": account.email, "password": PASSWORD})
    weak = await submit(client, "/signup", {"name": "Bob <b>", "email": new_email(), "password": "password"})

    assert taken.status_code == 409
    assert "already exists" in taken.text
    assert weak.status_code == 422
    assert "most common" in weak.text
    assert 'value="Bob &lt;b&gt;"' in weak.text  # kept, and escaped


async def test_a_half_filled_form_is_a_friendly_400(client: httpx.AsyncClient) -> None:
    response = await submit(client, "/signup", {"email": new_email()})

    assert response.status_code == 400
    assert "missing or not valid" in response.text


async def test_a_malformed_id_in_a_form_action_is_a_friendly_400(client: httpx.AsyncClient) -> None:
    await signed_in(client)

    response = await submit(client, "/account/sessions/not-a-uuid/revoke", {}, page="/account")

    assert response.status_code == 400


# -- the pages mailed links open ---------------------------------------------------------------------------
async def test_signing_up_then_opening_the_mailed_link_confirms_the_address_once(
    client: httpx.AsyncClient, mail: MailSink
) -> None:
    email = new_email()
    created = await submit(client, "/signup", {"name": "Ann Example", "email": email, "password": PASSWORD})
    link_token = await mail.await_token(email)

    first = await client.get(f"/verify-email?token={link_token}")
    again = await client.get(f"/verify-email?token={link_token}")

    assert created.status_code == 200
    assert "Check your inbox" in created.text
    assert first.status_code == 200
    assert "Email address confirmed" in first.text
    assert again.status_code == 400
    assert "invalid or expired" in again.text


@pytest.mark.parametrize("query", ["", "?token=", "?token=made-up", "?token=" + "x" * 5000, "?token=%00%ff"])
async def test_a_bad_verification_link_is_a_friendly_page(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/verify-email{query}")

    assert response.status_code == 400
    assert "This link is invalid or expired" in response.text


async def test_resetting_a_forgotten_password_through_the_mailed_link(
    client: httpx.AsyncClient, mail: MailSink
) -> None:
    account = await signup(client)
    asked = await submit(client, "/forgot-password", {"email": account.email})
    link_token = await mail.await_token(account.email, count=2)  # after the verification mail
    page = await client.get(f"/reset-password?token={link_token}")

    done = await client.post(
        "/reset-password",
        data={"csrf_token": await token(client), "token": link_token, "password": "brand new pass 77"},
    )

    assert asked.status_code == 200
    assert f"If an account exists for {account.email}" in asked.text
    assert page.status_code == 200
    assert f'name="token" value="{link_token}"' in page.text
    assert done.status_code == 303
    assert done.headers["location"] == "/?done=password_reset"
    account.password = "brand new pass 77"
    await sign_in(client, account)


async def test_forgetting_the_password_of_an_unknown_email_looks_the_same(client: httpx.AsyncClient) -> None:
    email = new_email()

    response = await submit(client, "/forgot-password", {"email": email})

    assert response.status_code == 200
    assert f"If an account exists for {email}" in response.text


@pytest.mark.parametrize("query", ["", "?token=", "?token=made-up"])
async def test_a_reset_link_without_a_live_token_says_so_when_opened(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/reset-password{query}")

    assert response.status_code == 400
    assert "This link is invalid or expired" in response.text


async def test_a_made_up_reset_token_changes_nothing(client: httpx.AsyncClient) -> None:
    account = await signup(client)

    response = await submit(client, "/reset-password", {"token": "made-up", "password": "brand new pass 77"})

    assert response.status_code == 400
    assert "This link is invalid or expired" in response.text
    await sign_in(client, account)  # the old password still works


async def test_a_weak_new_password_keeps_the_reset_form(client: httpx.AsyncClient, mail: MailSink) -> None:
    account = await signup(client)
    await submit(client, "/forgot-password", {"email": account.email})
    link_token = await mail.await_token(account.email, count=2)

    response = await submit(client, "/reset-password", {"token": link_token, "password": "short"})

    assert response.status_code == 422
    assert "at least" in response.text
    assert f'name="token" value="{link_token}"' in response.text


async def test_someone_elses_or_a_missing_passkey_cannot_be_renamed_or_removed(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    missing = uuid.uuid4()

    renamed = await submit(client, f"/account/passkeys/{missing}/rename", {"name": "Mine now"}, page="/account")
    removed = await submit(client, f"/account/passkeys/{missing}/remove", {}, page="/account")

    assert renamed.status_code == removed.status_code == 404
    assert "no longer exists" in removed.text


async def test_only_known_notices_are_shown(client: httpx.AsyncClient) -> None:
    response = await client.get("/?done=<script>alert(1)</script>")

    assert response.status_code == 200
    assert "alert(1)" not in response.text
    assert 'role="status"' not in response.text


async def test_too_many_wrong_passwords_say_how_long_to_wait(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    csrf = await token(client)
    for _ in range(10):
        await client.post("/", data={"csrf_token": csrf, "email": account.email, "password": "wrong guess!"})

    response = await client.post("/", data={"csrf_token": csrf, "email": account.email, "password": account.password})

    assert response.status_code == 429
    assert re.search(r"Too many attempts\. Please wait \d+ minutes and try again\.", response.text)
