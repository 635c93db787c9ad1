"""Two-step verification in the console: setting up an app, and the second step of a sign-in."""

from __future__ import annotations

import re

import httpx
import pyotp

from tests.console.forms import SESSION, set_cookies, sign_in, signed_in, submit, token
from tests.factories.identity import Totp, enable_totp, login, signup

RECOVERY_CODE = re.compile(r"<code>([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})</code>")


async def _account_with_totp(client: httpx.AsyncClient) -> tuple[object, Totp]:
    account = await login(client, await signup(client))
    return account, await enable_totp(client, account)


async def test_setting_up_an_app_shows_a_qr_code_and_the_key_then_the_recovery_codes_once(
    client: httpx.AsyncClient,
) -> None:
    await signed_in(client)

    setup = await submit(client, "/account/mfa/totp/setup", {}, page="/account")
    secret = re.search(r'data-totp-secret="([A-Z2-7]+)"', setup.text)
    assert secret is not None
    uri = re.search(r'name="otpauth_uri" value="([^"]+)"', setup.text)
    assert uri is not None
    wrong = await client.post(
        "/account/mfa/totp/enable",
        data={
            "csrf_token": await token(client),
            "code": "000000",
            "secret": secret.group(1),
            "otpauth_uri": uri.group(1),
        },
    )
    enabled = await client.post(
        "/account/mfa/totp/enable",
        data={"csrf_token": await token(client), "code": pyotp.TOTP(secret.group(1)).now()},
    )
    account = await client.get("/account")

    assert setup.status_code == 200
    assert '<img class="qr" src="data:image/svg+xml' in setup.text
    assert "otpauth://totp/" in setup.text
    assert wrong.status_code == 400
    assert "That code is wrong or has expired" in wrong.text
    assert f'data-totp-secret="{secret.group(1)}"' in wrong.text  # shown again, to try once more
    assert enabled.status_code == 200
    codes = RECOVERY_CODE.findall(enabled.text)
    assert len(codes) == 10
    assert "only time they are shown" in enabled.text
    assert '<span class="badge badge-success">On</span>' in account.text
    assert not any(code in account.text for code in codes)


async def test_a_tampered_setup_is_not_shown_back(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    await submit(client, "/account/mfa/totp/setup", {}, page="/account")

    response = await submit(
        client, "/account/mfa/totp/enable", {"code": "000000", "secret": "<script>", "otpauth_uri": "javascript:x"}
    )

    assert response.status_code == 400
    assert "<script>" not in response.text
    assert "javascript:x" not in response.text
    assert "Start over" in response.text


async def test_signing_in_with_a_second_factor_goes_through_the_code_step(client: httpx.AsyncClient) -> None:
    account, totp = await _account_with_totp(client)
    client.cookies.clear()

    first = await submit(client, "/", {"email": account.email, "password": account.password})  # type: ignore[attr-defined]
    pending = set_cookies(first)["tenantry_mfa"]
    step = await client.get("/mfa")
    wrong = await submit(client, "/mfa", {"code": "123456"}, page="/mfa")
    done = await submit(client, "/mfa", {"code": totp.code(steps_ahead=1)}, page="/mfa")

    assert first.status_code == 303
    assert first.headers["location"] == "/mfa"
    assert SESSION not in set_cookies(first)
    assert "HttpOnly" in pending
    assert "Max-Age=300" in pending
    assert "Use a recovery code" in step.text
    assert wrong.status_code == 401, (wrong.headers, wrong.text)
    assert "That code is wrong or has expired" in wrong.text
    assert done.status_code == 303
    assert done.headers["location"] == "/account"
    assert SESSION in set_cookies(done)
    assert 'tenantry_mfa=""' in set_cookies(done)["tenantry_mfa"]
    assert (await client.get("/account")).status_code == 200


async def test_a_recovery_code_works_once_as_the_second_step(client: httpx.AsyncClient) -> None:
    account, totp = await _account_with_totp(client)
    client.cookies.clear()
    code = totp.recovery_codes[0]

    await submit(client, "/", {"email": account.email, "password": account.password})  # type: ignore[attr-defined]
    page = await client.get("/mfa?method=recovery")
    used = await submit(client, "/mfa", {"code": code, "method": "recovery"}, page="/mfa")
    await submit(client, "/logout", {}, page="/account")
    await submit(client, "/", {"email": account.email, "password": account.password})  # type: ignore[attr-defined]
    again = await submit(client, "/mfa", {"code": code, "method": "recovery"}, page="/mfa")

    assert 'placeholder="xxxx-xxxx-xxxx"' in page.text
    assert "Use your authenticator app instead" in page.text
    assert used.status_code == 303
    assert again.status_code == 401
    assert 'placeholder="xxxx-xxxx-xxxx"' in again.text


async def test_the_code_step_without_a_pending_sign_in_starts_over(client: httpx.AsyncClient) -> None:
    page = await client.get("/mfa")
    posted = await submit(client, "/mfa", {"code": "123456"})
    client.cookies.set("tenantry_mfa", "mfa_made-up")
    forged = await submit(client, "/mfa", {"code": "123456"})

    assert page.status_code == 303
    assert page.headers["location"] == "/"
    assert posted.headers["location"] == forged.headers["location"] == "/?done=mfa_expired"
    assert 'tenantry_mfa=""' in set_cookies(forged)["tenantry_mfa"]
    assert "Your sign-in attempt expired" in (await client.get("/?done=mfa_expired")).text


async def test_new_recovery_codes_and_turning_the_app_off_need_a_current_code(client: httpx.AsyncClient) -> None:
    account, totp = await _account_with_totp(client)
    client.cookies.clear()
    await sign_in(client, account)  # type: ignore[arg-type]
    await submit(client, "/mfa", {"code": totp.code(steps_ahead=1)}, page="/mfa")

    refused = await submit(client, "/account/mfa/totp/disable", {"code": "000000"}, page="/account")
    fresh = await submit(client, "/account/mfa/recovery-codes", {"code": totp.recovery_codes[0]}, page="/account")
    off = await submit(client, "/account/mfa/totp/disable", {"code": totp.recovery_codes[1]}, page="/account")

    assert refused.status_code == 400
    assert "That code is wrong or has expired" in refused.text
    assert '<span class="badge badge-success">On</span>' in refused.text
    assert len(set(RECOVERY_CODE.findall(fresh.text)) - set(totp.recovery_codes)) == 10
    # Regenerating killed every earlier code: the old second one no longer turns the app off.
    assert off.status_code == 400
    new_code = RECOVERY_CODE.findall(fresh.text)[0]
    off = await submit(client, "/account/mfa/totp/disable", {"code": new_code}, page="/account")
    assert off.status_code == 303
    assert off.headers["location"] == "/account?done=totp_disabled"
    assert "Set up an authenticator app" in (await client.get("/account")).text
