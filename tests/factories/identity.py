"""Making users and signing them in, through the public API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx

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
