"""Making users and signing them in, through the public API."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx
import pyotp

PASSWORD = "a long and unusual passphrase"


@dataclass
class Account:
    email: str
    password: str
    user_id: str
    access_token: str = ""
    refresh_token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


async def signup(client: httpx.AsyncClient, *, email: str | None = None, password: str = PASSWORD) -> Account:
    email = email or new_email()
    response = await client.post("/v1/auth/signup", json={"email": email, "password": password, "name": "Test User"})
    assert response.status_code == 201, response.text
    return Account(email=email, password=password, user_id=response.json()["id"])


async def login(client: httpx.AsyncClient, account: Account, **headers: str) -> Account:
    response = await client.post(
        "/v1/auth/login", json={"email": account.email, "password": account.password}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    account.access_token, account.refresh_token = body["access_token"], body["refresh_token"]
    return account


async def signed_in(client: httpx.AsyncClient, **kwargs: str) -> Account:
    return await login(client, await signup(client, **kwargs))


@dataclass
class Totp:
    secret: str
    recovery_codes: list[str]

    def code(self, steps_ahead: int = 0) -> str:
        """The app's code, ``steps_ahead`` 30-second steps from now (the server allows ±1 for drift)."""
        return str(pyotp.TOTP(self.secret).at(time.time() + 30 * steps_ahead))


async def enable_totp(client: httpx.AsyncClient, account: Account) -> Totp:
    """Set up and confirm an authenticator app for a signed-in account (spends the current step)."""
    setup = await client.post("/v1/me/mfa/totp/setup", headers=account.headers)
    assert setup.status_code == 200, setup.text
    secret = setup.json()["secret"]
    enabled = await client.post(
        "/v1/me/mfa/totp/enable", json={"code": pyotp.TOTP(secret).now()}, headers=account.headers
    )
    assert enabled.status_code == 200, enabled.text
    return Totp(secret=secret, recovery_codes=enabled.json()["recovery_codes"])
