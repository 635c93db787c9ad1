"""TOTP second factor, recovery codes, and the second step of a sign-in: the attacks each rule stops."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid

import httpx
import pyotp
import pytest
from sqlalchemy import select, update

from tenantry.core.context import Actor
from tenantry.events.models import OutboxEvent
from tenantry.identity.models import MfaChallenge, RecoveryCode, TotpFactor
from tenantry.identity.sealing import Sealer, SealError, parse_key
from tenantry.identity.views import MfaRequired
from tenantry.platform import Platform
from tests.factories.identity import PASSWORD, Account, enable_totp, signed_in


async def _password_step(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mfa_required"] is True
    return str(body["mfa_token"])


async def _second_step(client: httpx.AsyncClient, mfa_token: str, code: str) -> httpx.Response:
    return await client.post("/v1/auth/mfa", json={"mfa_token": mfa_token, "code": code})


async def _event_types(platform: Platform, user_id: str) -> list[str]:
    async with platform.db.read() as tx:
        rows = (await tx.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all()
    return [row.type for row in rows if user_id in str(row.data)]


# -- setting up ----------------------------------------------------------------------------------------
async def test_setup_gives_an_authenticator_app_secret_that_is_inactive_until_confirmed(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_in(client)

    response = await client.post("/v1/me/mfa/totp/setup", headers=account.headers)

    assert response.status_code == 200
    body = response.json()
    uri = urllib.parse.urlsplit(body["otpauth_uri"])
    query = urllib.parse.parse_qs(uri.query)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert query["secret"] == [body["secret"]]
    assert query["issuer"] == ["Tenantry"]
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"]
    assert query.get("digits", ["6"]) == ["6"]
    assert query.get("period", ["30"]) == ["30"]
    assert len(pyotp.TOTP(body["secret"]).byte_secret()) >= 20  # 160 bits, as RFC 4226 recommends
    # Not confirmed: signing in still needs the password alone.
    login = await client.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    assert "access_token" in login.json()
    me = await client.get("/v1/me", headers=account.headers)
    assert me.json()["mfa_enabled"] is False


async def test_enabling_needs_a_right_code_and_returns_ten_single_use_recovery_codes(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    account = await signed_in(client)
    secret = (await client.post("/v1/me/mfa/totp/setup", headers=account.headers)).json()["secret"]

    wrong = await client.post("/v1/me/mfa/totp/enable", json={"code": "000000"}, headers=account.headers)
    right = await client.post(
        "/v1/me/mfa/totp/enable", json={"code": pyotp.TOTP(secret).now()}, headers=account.headers
    )

    assert wrong.status_code == 400
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.json()["code"] == "invalid_code"
    assert right.status_code == 200
    codes = right.json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    assert (await client.get("/v1/me", headers=account.headers)).json()["mfa_enabled"] is True
    status = (await client.get("/v1/me/mfa", headers=account.headers)).json()
    assert status == {"totp_enabled": True, "recovery_codes_left": 10, "passkeys": 0}
    assert "user.mfa_enabled" in await _event_types(platform, account.user_id)


async def test_setting_up_again_while_enabled_is_refused(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    await enable_totp(client, account)

    again = await client.post("/v1/me/mfa/totp/setup", headers=account.headers)

    assert again.status_code == 409
    assert again.json()["code"] == "mfa_already_enabled"


async def test_mfa_routes_need_a_signed_in_user(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("POST", "/v1/me/mfa/totp/setup"),
        ("POST", "/v1/me/mfa/totp/enable"),
        ("DELETE", "/v1/me/mfa/totp"),
        ("POST", "/v1/me/mfa/recovery-codes"),
    ]:
        response = await client.request(method, path, json={"code": "123456"})
        assert response.status_code == 401, path


# -- signing in with a second factor ----------------------------------------------------------------
async def test_password_alone_yields_an_mfa_token_and_no_tokens(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    await enable_totp(client, account)

    response = await client.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})

    assert response.status_code == 200
    body = response.json()
    assert body["mfa_required"] is True
    assert body["methods"] == ["totp", "recovery_code"]
    assert body["mfa_token"].startswith("mfa_")
    assert "access_token" not in body
    assert "refresh_token" not in body
    # The mfa_token opens nothing by itself.
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {body['mfa_token']}"})
    assert me.status_code == 401


async def test_a_totp_code_finishes_the_sign_in_once_and_never_again(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    code = totp.code(steps_ahead=1)  # the current step was spent confirming the app

    first = await _second_step(client, await _password_step(client, account), code)
    replay = await _second_step(client, await _password_step(client, account), code)

    assert first.status_code == 200, first.text
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {first.json()['access_token']}"})
    assert me.status_code == 200
    assert replay.status_code == 401
    assert replay.json()["code"] == "code_reused"


async def test_an_older_code_is_refused_once_a_newer_one_was_used(client: httpx.AsyncClient) -> None:
    """Accepting any unused code inside the drift window would let a shoulder-surfed code work later."""
    account = await signed_in(client)
    totp = await enable_totp(client, account)  # spends the current step

    previous = await _second_step(client, await _password_step(client, account), totp.code(steps_ahead=-1))

    assert previous.status_code == 401
    assert previous.json()["code"] == "code_reused"


async def test_one_step_of_clock_drift_is_accepted_and_two_are_not(
    client: httpx.AsyncClient, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    start = time.time()

    # The server's clock runs ahead of the phone: an hour later for the server, the phone's code is a
    # step behind (accepted), then two steps behind (refused), then a step ahead (accepted).
    def server_at(seconds: float) -> None:
        monkeypatch.setattr(platform.mfa, "clock", lambda: start + seconds)

    phone = pyotp.TOTP(totp.secret)
    server_at(3600)
    behind = await _second_step(client, await _password_step(client, account), phone.at(start + 3600 - 30))
    server_at(7200)
    too_far = await _second_step(client, await _password_step(client, account), phone.at(start + 7200 - 60))
    ahead = await _second_step(client, await _password_step(client, account), phone.at(start + 7200 + 30))

    assert behind.status_code == 200, behind.text
    assert too_far.status_code == 401
    assert too_far.json()["code"] == "invalid_code"
    assert ahead.status_code == 200, ahead.text


async def test_a_recovery_code_works_once(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    code = totp.recovery_codes[3]

    first = await _second_step(client, await _password_step(client, account), code.upper().replace("-", " "))
    again = await _second_step(client, await _password_step(client, account), code)

    assert first.status_code == 200, first.text
    assert again.status_code == 401
    assert again.json()["code"] == "invalid_code"
    assert (await client.get("/v1/me/mfa", headers=account.headers)).json()["recovery_codes_left"] == 9


async def test_five_wrong_codes_spend_the_mfa_token(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    mfa_token = await _password_step(client, account)

    wrong = [await _second_step(client, mfa_token, "000000") for _ in range(5)]
    right_but_late = await _second_step(client, mfa_token, totp.recovery_codes[0])

    assert [r.json()["code"] for r in wrong] == ["invalid_code"] * 5
    assert right_but_late.status_code == 401
    assert right_but_late.json()["code"] == "invalid_mfa_token"


async def test_fresh_mfa_tokens_do_not_buy_fresh_guesses(client: httpx.AsyncClient) -> None:
    """Each wrong code also counts against the account: signing in again does not reset the budget."""
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    for _ in range(2):
        mfa_token = await _password_step(client, account)
        for _ in range(5):
            await _second_step(client, mfa_token, "000000")

    blocked = await _second_step(client, await _password_step(client, account), totp.recovery_codes[0])

    assert blocked.status_code == 429
    assert blocked.json()["code"] == "too_many_requests"
    assert int(blocked.headers["retry-after"]) > 0


async def test_an_expired_or_unknown_mfa_token_is_refused(client: httpx.AsyncClient, platform: Platform) -> None:
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    mfa_token = await _password_step(client, account)
    async with platform.db.transaction() as tx:
        await tx.execute(update(MfaChallenge).values(expires_at=MfaChallenge.created_at))

    expired = await _second_step(client, mfa_token, totp.recovery_codes[0])
    unknown = await _second_step(client, "mfa_" + uuid.uuid4().hex, totp.recovery_codes[0])

    assert expired.status_code == unknown.status_code == 401
    assert expired.json()["code"] == unknown.json()["code"] == "invalid_mfa_token"


async def test_an_mfa_token_opens_one_session_only(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    mfa_token = await _password_step(client, account)

    first = await _second_step(client, mfa_token, totp.recovery_codes[0])
    second = await _second_step(client, mfa_token, totp.recovery_codes[1])

    assert first.status_code == 200
    assert second.status_code == 401
    assert second.json()["code"] == "invalid_mfa_token"


async def test_the_same_code_sent_twice_at_once_wins_once(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    tokens = [await _password_step(client, account) for _ in range(4)]
    code = totp.code(steps_ahead=1)

    answers = await asyncio.gather(*(_second_step(client, token, code) for token in tokens))

    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401]


# -- managing the factor ------------------------------------------------------------------------------
async def test_new_recovery_codes_replace_the_old_ones(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    totp = await enable_totp(client, account)

    fresh = await client.post(
        "/v1/me/mfa/recovery-codes", json={"code": totp.recovery_codes[0]}, headers=account.headers
    )
    old = await _second_step(client, await _password_step(client, account), totp.recovery_codes[1])
    new = await _second_step(client, await _password_step(client, account), fresh.json()["recovery_codes"][0])

    assert fresh.status_code == 200
    assert len(set(fresh.json()["recovery_codes"]) - set(totp.recovery_codes)) == 10
    assert old.status_code == 401
    assert new.status_code == 200


async def test_regenerating_needs_a_valid_code(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    await enable_totp(client, account)

    refused = await client.post("/v1/me/mfa/recovery-codes", json={"code": "123456"}, headers=account.headers)

    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_code"


async def test_disabling_needs_a_current_code_and_then_the_password_is_enough(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    account = await signed_in(client)
    totp = await enable_totp(client, account)

    refused = await client.request("DELETE", "/v1/me/mfa/totp", json={"code": "000000"}, headers=account.headers)
    reused = await client.request("DELETE", "/v1/me/mfa/totp", json={"code": totp.code()}, headers=account.headers)
    disabled = await client.request(
        "DELETE", "/v1/me/mfa/totp", json={"code": totp.code(steps_ahead=1)}, headers=account.headers
    )
    login = await client.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})

    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_code")
    assert (reused.status_code, reused.json()["code"]) == (400, "code_reused")
    assert disabled.status_code == 204
    assert "access_token" in login.json()
    assert (await client.get("/v1/me", headers=account.headers)).json()["mfa_enabled"] is False
    assert "user.mfa_disabled" in await _event_types(platform, account.user_id)
    async with platform.db.read() as tx:
        assert (
            await tx.scalars(select(RecoveryCode).where(RecoveryCode.user_id == uuid.UUID(account.user_id)))
        ).all() == []


async def test_disabling_without_mfa_is_a_conflict(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)

    response = await client.request("DELETE", "/v1/me/mfa/totp", json={"code": "123456"}, headers=account.headers)

    assert response.status_code == 409
    assert response.json()["code"] == "mfa_not_enabled"


@pytest.mark.parametrize("body", [{}, {"code": ""}, {"code": "x" * 65}, {"code": 123456}, []])
async def test_malformed_codes_are_validation_errors(client: httpx.AsyncClient, body: object) -> None:
    account = await signed_in(client)

    response = await client.post("/v1/me/mfa/totp/enable", json=body, headers=account.headers)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


# -- at rest ---------------------------------------------------------------------------------------------
async def test_secrets_are_sealed_and_recovery_codes_hashed_at_rest(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    user_id = uuid.UUID(account.user_id)

    async with platform.db.read() as tx:
        factor = await tx.get(TotpFactor, user_id)
        stored = (await tx.scalars(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user_id))).all()

    assert factor is not None
    assert totp.secret not in factor.secret_sealed
    assert platform.sealer.open(factor.secret_sealed, owner=user_id.bytes).decode() == totp.secret
    with pytest.raises(SealError):  # copied onto another user's row, it does not open
        platform.sealer.open(factor.secret_sealed, owner=uuid.uuid4().bytes)
    plain = {c.replace("-", "") for c in totp.recovery_codes}
    assert len(stored) == 10
    assert not plain & set(stored)
    assert not any(c in h for c in plain for h in stored)


def test_a_sealed_value_does_not_open_under_another_key_or_when_tampered() -> None:
    owner = uuid.uuid4().bytes
    sealer = Sealer(b"k" * 32)
    sealed = sealer.seal(b"JBSWY3DPEHPK3PXP", owner=owner)
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]

    with pytest.raises(SealError):
        Sealer(b"j" * 32).open(sealed, owner=owner)
    with pytest.raises(SealError):
        sealer.open(tampered, owner=owner)
    assert sealer.open(sealed, owner=owner) == b"JBSWY3DPEHPK3PXP"


def test_a_configured_key_must_be_32_bytes_of_base64url() -> None:
    assert parse_key("a" * 43) == parse_key("a" * 43 + "=")
    with pytest.raises(ValueError, match="32 bytes"):
        parse_key("c2hvcnQ")
    with pytest.raises(ValueError, match="base64url"):
        parse_key("not base64 at all!")


async def test_a_key_kept_under_the_data_dir_is_made_once_and_private(platform: Platform) -> None:
    path = platform.settings.data_dir / "keys" / "encryption.key"

    assert path.stat().st_mode & 0o777 == 0o600
    again = Sealer.for_deployment(configured=None, data_dir=platform.settings.data_dir)
    assert again.key_id == platform.sealer.key_id


async def test_a_console_sign_in_cannot_be_finished_through_the_api(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    started = await platform.identity.login(
        email=account.email, password=PASSWORD, actor=Actor(type="anonymous"), channel="console"
    )
    assert isinstance(started, MfaRequired)

    response = await _second_step(client, started.mfa_token, totp.recovery_codes[0])

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_mfa_token"


async def test_a_password_reset_abandons_sign_ins_waiting_for_their_second_factor(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    """An mfa_token proves the old password: once the password changes, it must not finish a sign-in."""
    account = await signed_in(client)
    totp = await enable_totp(client, account)
    mfa_token = await _password_step(client, account)

    changed = await client.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase entirely"},
        headers=account.headers,
    )
    response = await _second_step(client, mfa_token, totp.recovery_codes[0])

    assert changed.status_code == 204
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_mfa_token"
