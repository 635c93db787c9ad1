"""Changing, forgetting and resetting passwords."""

from __future__ import annotations

import asyncio

import httpx

from tenantry.platform import Platform
from tests.factories.identity import PASSWORD, Account, login, new_email, signed_in, signup
from tests.mailsink import MailSink

NEW_PASSWORD = "another quite long passphrase"


async def test_changing_the_password_ends_every_other_session(client: httpx.AsyncClient) -> None:
    here = await signed_in(client)
    elsewhere = await login(client, Account(here.email, here.password, here.user_id))

    response = await client.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=here.headers
    )

    assert response.status_code == 204
    assert (await client.get("/v1/me", headers=here.headers)).status_code == 200
    assert (await client.get("/v1/me", headers=elsewhere.headers)).status_code == 401
    old = await client.post("/v1/auth/login", json={"email": here.email, "password": PASSWORD})
    new = await client.post("/v1/auth/login", json={"email": here.email, "password": NEW_PASSWORD})
    assert old.status_code == 401
    assert new.status_code == 200


async def test_changing_the_password_needs_the_current_one(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)

    response = await client.post(
        "/v1/me/password",
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
        headers=account.headers,
    )

    assert response.status_code == 400
    assert response.json()["code"] == "wrong_password"
    still = await client.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    assert still.status_code == 200


async def test_the_new_password_must_be_strong(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)

    response = await client.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": "12345678"}, headers=account.headers
    )

    assert response.status_code == 422
    assert response.json()["code"] == "weak_password"


async def test_forgot_password_answers_202_whether_or_not_the_account_exists(
    client: httpx.AsyncClient, mail: MailSink
) -> None:
    account = await signup(client)
    stranger = new_email()

    known = await client.post("/v1/auth/password/forgot", json={"email": account.email})
    unknown = await client.post("/v1/auth/password/forgot", json={"email": stranger})

    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content
    await mail.await_token(account.email, count=2)  # verification, then the reset
    assert mail.to(stranger) == []


async def test_reset_sets_the_password_revokes_all_sessions_and_spends_the_token(
    client: httpx.AsyncClient, mail: MailSink
) -> None:
    account = await signed_in(client)
    await client.post("/v1/auth/password/forgot", json={"email": account.email})
    token = await mail.await_token(account.email, count=2)

    reset = await client.post("/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD})
    again = await client.post("/v1/auth/password/reset", json={"token": token, "password": "yet another passphrase"})

    assert reset.status_code == 204
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_token"
    assert (await client.get("/v1/me", headers=account.headers)).status_code == 401
    assert (await client.post("/v1/auth/refresh", json={"refresh_token": account.refresh_token})).status_code == 401
    login_new = await client.post("/v1/auth/login", json={"email": account.email, "password": NEW_PASSWORD})
    assert login_new.status_code == 200
    # Reading the mail proved the address, too.
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {login_new.json()['access_token']}"})
    assert me.json()["email_verified"] is True


async def test_a_weak_password_on_reset_keeps_the_token_alive(client: httpx.AsyncClient, mail: MailSink) -> None:
    account = await signup(client)
    await client.post("/v1/auth/password/forgot", json={"email": account.email})
    token = await mail.await_token(account.email, count=2)

    weak = await client.post("/v1/auth/password/reset", json={"token": token, "password": "password"})
    strong = await client.post("/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD})

    assert weak.status_code == 422
    assert weak.json()["code"] == "weak_password"
    assert strong.status_code == 204


async def test_a_newer_reset_mail_replaces_the_older_one(client: httpx.AsyncClient, mail: MailSink) -> None:
    account = await signup(client)
    await client.post("/v1/auth/password/forgot", json={"email": account.email})
    older = await mail.await_token(account.email, count=2)
    await client.post("/v1/auth/password/forgot", json={"email": account.email})
    newer = await mail.await_token(account.email, count=3)

    stale = await client.post("/v1/auth/password/reset", json={"token": older, "password": NEW_PASSWORD})
    fresh = await client.post("/v1/auth/password/reset", json={"token": newer, "password": NEW_PASSWORD})

    assert stale.status_code == 400
    assert fresh.status_code == 204


async def test_a_verification_token_cannot_reset_a_password(client: httpx.AsyncClient, mail: MailSink) -> None:
    account = await signup(client)
    verification = await mail.await_token(account.email)

    response = await client.post("/v1/auth/password/reset", json={"token": verification, "password": NEW_PASSWORD})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_token"


async def test_passwords_are_stored_as_argon2id_and_rehashed_when_parameters_change(
    client: httpx.AsyncClient, platform: Platform, database_url: str
) -> None:
    from argon2 import PasswordHasher
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    account = await signup(client)
    engine = create_async_engine(database_url)
    weaker = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    async with engine.begin() as connection:
        stored = (await connection.execute(text("SELECT password_hash FROM identity_user"))).scalar_one()
        await connection.execute(text("UPDATE identity_user SET password_hash = :h"), {"h": weaker})

    await login(client, account)

    async with engine.begin() as connection:
        rehashed = (await connection.execute(text("SELECT password_hash FROM identity_user"))).scalar_one()
    await engine.dispose()
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in stored
    assert rehashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert platform.passwords.needs_rehash(weaker)


async def test_reset_mails_to_one_address_are_capped_without_telling_the_caller(
    client: httpx.AsyncClient, mail: MailSink, platform: Platform
) -> None:
    account = await signup(client)
    allowed = platform.settings.mail_requests_per_email

    answers = [await client.post("/v1/auth/password/forgot", json={"email": account.email}) for _ in range(allowed + 2)]
    await mail.await_token(account.email, count=1 + allowed)  # the verification mail, then the resets
    await platform.drain()
    await asyncio.sleep(0.3)  # room for any mail beyond the cap to arrive, were one sent

    assert {a.status_code for a in answers} == {202}
    resets = [m for m in mail.to(account.email) if m["Subject"] == "Reset your password"]
    assert len(resets) == allowed
