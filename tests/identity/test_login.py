"""Sign-in, brute-force throttling and the access token a third party can verify."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager

from tenantry.app import create_app
from tenantry.platform import Platform
from tenantry.settings import Settings
from tests.factories.identity import PASSWORD, new_email, signed_in, signup


async def test_login_returns_a_bearer_pair(client: httpx.AsyncClient) -> None:
    account = await signup(client)

    response = await client.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    assert body["access_token"].count(".") == 2
    assert body["refresh_token"]
    assert body["refresh_token"] != body["access_token"]


async def test_login_ignores_the_case_of_the_email(client: httpx.AsyncClient) -> None:
    account = await signup(client)

    response = await client.post("/v1/auth/login", json={"email": account.email.upper(), "password": PASSWORD})

    assert response.status_code == 200


async def test_wrong_password_and_unknown_email_get_the_same_answer(client: httpx.AsyncClient) -> None:
    account = await signup(client)

    wrong = await client.post("/v1/auth/login", json={"email": account.email, "password": "not the password"})
    unknown = await client.post("/v1/auth/login", json={"email": new_email(), "password": "not the password"})

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["code"] == unknown.json()["code"] == "invalid_credentials"
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_an_unknown_email_costs_a_password_verification_too(
    client: httpx.AsyncClient, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The time of an answer must not tell whether an account exists: both paths run argon2."""
    account = await signup(client)
    calls: list[str] = []
    original = platform.passwords._verify

    def counting(password_hash: str, password: str) -> bool:
        calls.append(password_hash)
        return original(password_hash, password)

    monkeypatch.setattr(platform.passwords, "_verify", counting)
    await client.post("/v1/auth/login", json={"email": account.email, "password": "nope nope nope"})
    await client.post("/v1/auth/login", json={"email": new_email(), "password": "nope nope nope"})

    assert len(calls) == 2
    assert calls[1].startswith("$argon2id$")


async def test_repeated_failures_for_one_email_are_throttled_even_with_the_right_password(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    account = await signup(client)
    allowed = platform.settings.login_failures_per_email
    for _ in range(allowed):
        response = await client.post("/v1/auth/login", json={"email": account.email, "password": "wrong guess!"})
        assert response.status_code == 401

    blocked = await client.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})

    assert blocked.status_code == 429
    assert blocked.json()["code"] == "too_many_requests"
    assert int(blocked.headers["Retry-After"]) >= 1


async def test_failures_from_one_address_are_throttled_across_emails(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"login_failures_per_ip": 3}), access_log=False)
    async with LifespanManager(app):
        attacker = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("203.0.113.9", 4000)), base_url="http://testserver"
        )
        bystander = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("198.51.100.7", 4000)), base_url="http://testserver"
        )
        async with attacker, bystander:
            account = await signup(bystander)
            for _ in range(3):
                response = await attacker.post("/v1/auth/login", json={"email": new_email(), "password": "guess guess"})
                assert response.status_code == 401

            blocked = await attacker.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
            other_address = await bystander.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})

    assert blocked.status_code == 429
    assert other_address.status_code == 200


async def test_the_access_token_verifies_with_the_published_jwks(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)

    jwks = (await client.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(account.access_token)
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(
        account.access_token, jwt.PyJWK(key).key, algorithms=[header["alg"]], issuer="http://testserver"
    )

    assert header["alg"] in ("EdDSA", "ES256")
    assert claims["sub"] == account.user_id
    assert {"iss", "sub", "sid", "exp", "iat", "jti"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert abs(claims["iat"] - time.time()) < 60


async def test_a_forged_or_tampered_token_is_unauthorized(client: httpx.AsyncClient) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    account = await signed_in(client)
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(account.access_token)["kid"]
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid})
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    head, body, signature = account.access_token.split(".")
    tampered = f"{head}.{body}x.{signature}"

    for token in (forged, unsigned, tampered, "garbage"):
        response = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"


async def test_missing_or_malformed_authorization_is_unauthorized(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        response = await client.get("/v1/me", headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"


async def test_hashing_threads_only_take_cpu_nobody_else_wants(platform: Platform) -> None:
    """A login storm must not starve the event loop: hashing runs under SCHED_IDLE (Linux)."""
    import asyncio
    import os

    policy = await asyncio.get_running_loop().run_in_executor(platform.passwords.pool, os.sched_getscheduler, 0)

    assert policy == os.SCHED_IDLE
