"""What makes ``make run`` work end to end on one machine: the development mailbox, and the move from
http://127.0.0.1:8000 (where it listens) to http://localhost:8000 (the console's address)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tenantry.app import create_app
from tenantry.settings import Settings
from tests.console.forms import submit
from tests.factories.identity import new_email


def _settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "data_dir": tmp_path / "data",
        "base_url": "http://localhost:8000",
        "log_level": "warning",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


async def _console(settings: Settings, *, peer: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, access_log=False)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as http:
            yield http


@pytest.fixture
async def console(tmp_path: Path, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A dev server with no SMTP server: mail is kept in the local mailbox."""
    async for http in _console(_settings(tmp_path, database_url)):
        yield http


async def test_the_mailbox_shows_the_confirmation_mail_and_its_link_confirms(console: httpx.AsyncClient) -> None:
    email = new_email()
    signed_up = await submit(
        console,
        "/signup",
        {"name": "Grace", "email": email, "password": "a long and unusual passphrase"},
        page="/signup",
    )
    page = None
    for _ in range(50):  # the mail is sent by the background job runner, a moment after the answer
        page = await console.get("/mailbox")
        if email in page.text:
            break
        await asyncio.sleep(0.1)
    assert page is not None

    assert 'href="/mailbox"' in signed_up.text
    assert page.status_code == 200
    assert email in page.text
    link = page.text.split('href="http://localhost:8000/verify-email?token=', 1)[1].split('"', 1)[0]
    confirmed = await console.get(f"/verify-email?token={link}")
    assert "Email address confirmed" in confirmed.text


@pytest.mark.parametrize(
    ("overrides", "peer"),
    [
        ({"env": "prod"}, "127.0.0.1"),
        ({"smtp_url": "smtp://127.0.0.1:9"}, "127.0.0.1"),
        ({}, "192.0.2.10"),  # a browser on another machine (the address is only a label: nothing is sent to it)
    ],
    ids=["prod", "smtp-configured", "not-this-machine"],
)
async def test_the_mailbox_exists_only_in_dev_with_local_mail_for_this_machine(
    tmp_path: Path, database_url: str, overrides: dict[str, object], peer: str
) -> None:
    async for http in _console(_settings(tmp_path, database_url, **overrides), peer=peer):
        response = await http.get("/mailbox")

        assert response.status_code == 404
        assert "Open the link" not in response.text


async def test_a_browser_at_the_ip_address_is_sent_to_the_named_address(console: httpx.AsyncClient) -> None:
    page = await console.get("http://127.0.0.1:8000/reset-password?token=abc")
    api = await console.get("http://127.0.0.1:8000/healthz")
    other_port = await console.get("http://127.0.0.1:9000/signup")
    named = await console.get("http://localhost:8000/signup")

    assert page.status_code == 307
    assert page.headers["location"] == "http://localhost:8000/reset-password?token=abc"
    assert api.status_code == 200
    assert other_port.status_code == 200
    assert named.status_code == 200
