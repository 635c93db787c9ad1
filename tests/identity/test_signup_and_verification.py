"""Sign-up and email verification, as a client of the API sees them."""

from __future__ import annotations

import httpx
import pytest

from tests.factories.identity import PASSWORD, new_email, signup
from tests.mailsink import MailSink


async def test_signup_answers_the_user_and_mails_a_verification_token(
    client: httpx.AsyncClient, mail: MailSink
) -> None:
    email = new_email()
    response = await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Ann Example"})

    assert response.status_code == 201
    body = response.json()
    assert body["email"] == email
    assert body["name"] == "Ann Example"
    assert body["email_verified"] is False
    assert body["id"]
    assert body["created_at"]
    assert "password" not in response.text
    assert "hash" not in response.text
    token = await mail.await_token(email)
    assert len(token) >= 32


async def test_verifying_with_the_mailed_token_marks_the_email_verified_once(
    client: httpx.AsyncClient, mail: MailSink
) -> None:
    account = await signup(client)
    token = await mail.await_token(account.email)

    first = await client.post("/v1/auth/verify-email", json={"token": token})
    again = await client.post("/v1/auth/verify-email", json={"token": token})

    assert first.status_code == 200
    assert first.json()["email_verified"] is True
    assert first.json()["id"] == account.user_id
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_token"


@pytest.mark.parametrize("token", ["", "x" * 43, "not-a-token"])
async def test_a_made_up_verification_token_is_refused(client: httpx.AsyncClient, token: str) -> None:
    response = await client.post("/v1/auth/verify-email", json={"token": token})

    assert response.status_code in (400, 422)
    assert response.json()["code"] in ("invalid_token", "validation_error")
    assert response.headers["content-type"] == "application/problem+json"


async def test_an_expired_verification_token_is_refused(
    client: httpx.AsyncClient, mail: MailSink, database_url: str
) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    account = await signup(client)
    token = await mail.await_token(account.email)
    engine = create_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE identity_email_token SET expires_at = created_at"))
    await engine.dispose()

    response = await client.post("/v1/auth/verify-email", json={"token": token})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_token"


async def test_a_taken_email_is_refused_whatever_its_case(client: httpx.AsyncClient) -> None:
    account = await signup(client)

    response = await client.post(
        "/v1/auth/signup", json={"email": account.email.upper(), "password": PASSWORD, "name": "Copy"}
    )

    assert response.status_code == 409
    assert response.json()["code"] == "email_taken"


@pytest.mark.parametrize(
    "password",
    [
        "short1!",  # under 8 characters
        "password123",  # among the most common passwords
        "qwertyuiop",
        "aaaaaaaaaaaa",
    ],
)
async def test_weak_passwords_are_refused(client: httpx.AsyncClient, password: str) -> None:
    response = await client.post("/v1/auth/signup", json={"email": new_email(), "password": password, "name": "W"})

    assert response.status_code == 422
    assert response.json()["code"] == "weak_password"


async def test_a_password_equal_to_the_email_is_refused(client: httpx.AsyncClient) -> None:
    email = new_email()
    response = await client.post("/v1/auth/signup", json={"email": email, "password": email, "name": "W"})

    assert response.status_code == 422
    assert response.json()["code"] == "weak_password"


async def test_long_passwords_are_accepted(client: httpx.AsyncClient) -> None:
    long_password = "correct horse battery staple " * 5  # 145 characters
    account = await signup(client, password=long_password)

    response = await client.post("/v1/auth/login", json={"email": account.email, "password": long_password})

    assert response.status_code == 200


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "two@@example.com"])
async def test_a_bad_email_is_a_validation_error(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "B"})

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_missing_fields_are_a_validation_error_naming_them(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/signup", json={"email": new_email()})

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert {e["field"] for e in body["errors"]} == {"password", "name"}


async def test_a_failed_signup_writes_nothing(client: httpx.AsyncClient, mail: MailSink) -> None:
    email = new_email()
    await client.post("/v1/auth/signup", json={"email": email, "password": "password", "name": "W"})

    response = await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Ok"})

    assert response.status_code == 201  # the refused attempt left no half-made account behind
    await mail.await_token(email)
    assert len(mail.to(email)) == 1
