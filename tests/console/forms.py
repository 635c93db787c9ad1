"""Using the console as a browser does, through an httpx client: pages, their forms and the cookies."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from tests.factories.identity import PASSWORD, Account, signup

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
SESSION = "tenantry_session"


def form_token(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = CSRF_FIELD.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def token(client: httpx.AsyncClient, path: str = "/") -> str:
    """Open ``path`` like a person would before submitting one of its forms; returns the form's token."""
    page = await client.get(path, follow_redirects=True)
    assert page.status_code == 200, page.text
    return form_token(page.text)


async def submit(client: httpx.AsyncClient, path: str, data: dict[str, str], *, page: str = "/") -> httpx.Response:
    """Fill in a form of ``page`` and post it to ``path``."""
    return await client.post(path, data={"csrf_token": await token(client, page), **data})


async def sign_in(client: httpx.AsyncClient, account: Account) -> httpx.Response:
    response = await submit(client, "/", {"email": account.email, "password": account.password})
    assert response.status_code == 303, response.text
    return response


async def signed_in(client: httpx.AsyncClient) -> Account:
    """A new account (made through the API), signed in to the console on ``client``."""
    account = await signup(client, password=PASSWORD)
    response = await sign_in(client, account)
    assert response.headers["location"] == "/account"
    return account


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each cookie the response sets, by name, with its attributes as sent."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0]
        found[name] = header
    return found


def another_browser(app: FastAPI, ip: str) -> httpx.AsyncClient:
    """A second browser (its own cookies) on another address, for the same application."""
    transport = httpx.ASGITransport(app=app, client=(ip, 50001))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")
