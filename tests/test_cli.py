"""The ``tenantry`` command, run as a person runs it: a real process, configured by its environment."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager

from tenantry.app import create_app
from tenantry.db import migrate
from tenantry.settings import Settings
from tests.conftest import BACKENDS, PG_ADMIN_URL, _create_pg_database, _drop_pg_database, free_port
from tests.factories.identity import enable_totp, login, signed_in, signup
from tests.mailsink import TOKEN
from tests.servers import BASE_URL, Fleet, tenantry, tenantry_env

pytestmark = pytest.mark.slow

HEAD = migrate.head_revision()


@pytest.fixture
async def empty_pg_url() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own that no migration has touched, dropped afterwards."""
    name = f"tenantry_cli_{uuid.uuid4().hex[:12]}"
    await _create_pg_database(name)
    host = PG_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql+asyncpg://{host}/{name}"
    finally:
        await _drop_pg_database(name)


@pytest.fixture(params=BACKENDS)
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"  # not even the file exists yet
    url = request.getfixturevalue("empty_pg_url")
    assert isinstance(url, str)
    return url


def env_for(tmp_path: Path, database_url: str | None = None) -> dict[str, str]:
    """No SMTP, no Redis: a data dir and (unless given) a SQLite file of the test's own."""
    return tenantry_env(
        database_url=database_url or f"sqlite+aiosqlite:///{tmp_path / 'tenantry.db'}",
        data_dir=str(tmp_path / "data"),
        base_url=BASE_URL,
    )


def words(text: str) -> str:
    """Console output with its line wrapping undone."""
    return " ".join(text.split())


async def test_migrate_brings_a_fresh_database_to_the_head_and_may_run_again(
    fresh_database_url: str, tmp_path: Path
) -> None:
    env = env_for(tmp_path, fresh_database_url)

    first = await tenantry("migrate", env=env, cwd=tmp_path)
    again = await tenantry("migrate", env=env, cwd=tmp_path)

    assert first.returncode == 0, first
    assert f"revision {HEAD}" in words(first.stdout)
    assert again.returncode == 0, again
    assert f"revision {HEAD}" in words(again.stdout)
    assert await migrate.current_revision(fresh_database_url) == HEAD


async def test_serve_refuses_an_unmigrated_postgresql_database_and_says_to_migrate(
    empty_pg_url: str, tmp_path: Path
) -> None:
    env = env_for(tmp_path, empty_pg_url)

    refused = await tenantry("serve", "--port", str(free_port()), env=env, cwd=tmp_path, within=30)

    assert refused.returncode != 0, refused
    assert "tenantry migrate" in words(refused.stderr), refused
    assert await migrate.current_revision(empty_pg_url) is None  # it did not migrate behind the operator's back


async def mail_list_showing(address: str, *, env: dict[str, str], cwd: Path, within: float = 10.0) -> str:
    """The output of ``tenantry mail list`` once it shows a mail to ``address`` (mail is sent in the background)."""
    deadline = time.monotonic() + within
    while True:
        listed = await tenantry("mail", "list", env=env, cwd=cwd)
        assert listed.returncode == 0, listed
        if address in listed.stdout:
            return listed.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"no mail to {address} after {within}s:\n{listed}")
        await asyncio.sleep(0.2)


def token_mailed_to(address: str, listing: str) -> str:
    match = TOKEN.search(listing, listing.index(address))
    assert match, f"no token=… after the mail to {address}:\n{listing}"
    return match.group(1)


async def test_without_smtp_mail_list_shows_the_mail_and_its_token_verifies_the_address(
    tmp_path: Path, fleet: Fleet
) -> None:
    env = env_for(tmp_path)  # a fresh SQLite file: serve migrates it itself
    (server,) = await fleet.start(env)
    async with httpx.AsyncClient(base_url=server.url) as http:
        account = await signup(http)

        listing = await mail_list_showing(account.email, env=env, cwd=tmp_path)
        verified = await http.post("/v1/auth/verify-email", json={"token": token_mailed_to(account.email, listing)})

    assert verified.status_code == 200, verified.text
    assert verified.json()["email_verified"] is True


async def published_keys(http: httpx.AsyncClient, *, count: int, within: float = 5.0) -> list[dict[str, Any]]:
    """The JWKS once it lists ``count`` keys (a server re-reads the key file at most once a second)."""
    deadline = time.monotonic() + within
    while True:
        keys: list[dict[str, Any]] = (await http.get("/.well-known/jwks.json")).json()["keys"]
        if len(keys) == count or time.monotonic() > deadline:
            return keys
        await asyncio.sleep(0.1)


def claims(token: str, jwks: list[dict[str, Any]]) -> dict[str, Any]:
    """The token's claims, verified the way a resource server would: with the published key its header names."""
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next((k for k in jwks if k["kid"] == kid), None)
    assert jwk is not None, f"key {kid} is not published"
    verified: dict[str, Any] = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], issuer=BASE_URL)
    return verified


async def test_keys_rotate_while_serving_keeps_earlier_tokens_valid_and_signs_with_the_new_key(
    tmp_path: Path, fleet: Fleet
) -> None:
    env = env_for(tmp_path)
    (server,) = await fleet.start(env)
    async with httpx.AsyncClient(base_url=server.url) as http:
        before = await signed_in(http)
        old_kid = jwt.get_unverified_header(before.access_token)["kid"]
        assert [k["kid"] for k in await published_keys(http, count=1)] == [old_kid]

        rotated = await tenantry("keys", "rotate", env=env, cwd=tmp_path)
        assert rotated.returncode == 0, rotated
        new_kid = re.search(r"New signing key (\w+)", rotated.stdout)
        assert new_kid, rotated
        jwks = await published_keys(http, count=2)
        still_valid = await http.get("/v1/me", headers=before.headers)
        after = await login(http, dataclasses.replace(before))
        listed = await tenantry("keys", "list", env=env, cwd=tmp_path)

    assert sorted(k["kid"] for k in jwks) == sorted([old_kid, new_kid.group(1)])
    assert still_valid.status_code == 200, still_valid.text
    assert jwt.get_unverified_header(after.access_token)["kid"] == new_kid.group(1)
    assert claims(after.access_token, jwks)["sub"] == before.user_id
    assert claims(before.access_token, jwks)["sub"] == before.user_id
    assert listed.returncode == 0, listed
    assert old_kid in listed.stdout
    assert new_kid.group(1) in listed.stdout


async def test_worker_once_delivers_mail_queued_while_no_worker_ran_and_exits(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    settings = Settings(
        database_url=env["TENANTRY_DATABASE_URL"],
        data_dir=tmp_path / "data",
        base_url=BASE_URL,
        embedded_worker=False,
        log_level="warning",
    )
    migrate.upgrade(settings.database_url)
    app = create_app(settings, access_log=False)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http,
    ):
        account = await signup(http)  # its verification mail is queued, and nobody runs the queue
    before = await tenantry("mail", "list", env=env, cwd=tmp_path)

    worked = await tenantry("worker", "--once", env=env, cwd=tmp_path)

    assert "The mailbox is empty." in before.stdout, before
    assert worked.returncode == 0, worked
    after = await tenantry("mail", "list", env=env, cwd=tmp_path)
    assert account.email in after.stdout, after
    assert token_mailed_to(account.email, after.stdout)


async def test_users_reset_mfa_lets_someone_who_lost_their_app_sign_in_with_the_password(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    settings = Settings(
        database_url=env["TENANTRY_DATABASE_URL"], data_dir=tmp_path / "data", base_url=BASE_URL, log_level="warning"
    )
    migrate.upgrade(settings.database_url)
    app = create_app(settings, access_log=False)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http,
    ):
        account = await signed_in(http)
        await enable_totp(http, account)
        before = await http.post("/v1/auth/login", json={"email": account.email, "password": account.password})

        reset = await tenantry("users", "reset-mfa", account.email.upper(), env=env, cwd=tmp_path)
        unknown = await tenantry("users", "reset-mfa", "nobody@example.com", env=env, cwd=tmp_path)

        after = await http.post("/v1/auth/login", json={"email": account.email, "password": account.password})
        me = await http.get("/v1/me", headers=account.headers)  # the running server forgot its cached view

    assert before.json()["mfa_required"] is True
    assert reset.returncode == 0, reset
    assert "Two-factor authentication is off" in words(reset.stdout)
    assert unknown.returncode == 1
    assert "No account with the email nobody@example.com" in words(unknown.stdout)
    assert "access_token" in after.json()
    assert me.json()["mfa_enabled"] is False


async def test_worker_once_sends_webhooks_and_the_operator_lists_them(tmp_path: Path) -> None:
    from tests.factories.tenancy import create_org
    from tests.webhooks.receiver import Receiver, answer

    env = {**env_for(tmp_path), "TENANTRY_WEBHOOK_ALLOW_PRIVATE": "true", "TENANTRY_WEBHOOK_RETRY_SCHEDULE": "60"}
    settings = Settings(
        database_url=env["TENANTRY_DATABASE_URL"],
        data_dir=tmp_path / "data",
        base_url=BASE_URL,
        embedded_worker=False,
        webhook_allow_private=True,
        log_level="warning",
    )
    migrate.upgrade(settings.database_url)
    app = create_app(settings, access_log=False)
    async with (
        Receiver() as receiver,
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http,
    ):
        org = await create_org(http)
        for path, reply in (("/ok", answer(204)), ("/down", answer(503, body="maintenance"))):
            made = await http.post(
                org.path("/webhooks"),
                json={"url": receiver.route(path, reply), "event_types": ["webhook.test"]},
                headers=org.owner.headers,
            )
            await http.post(org.path(f"/webhooks/{made.json()['id']}/test"), headers=org.owner.headers)
        await asyncio.sleep(0.3)
        assert receiver.requests == []  # nobody delivers until a worker runs

        worked = await tenantry("worker", "--once", env=env, cwd=tmp_path)
        listed = await tenantry("webhooks", "deliveries", "--org", org.id, env=env, cwd=tmp_path)
        failed = await tenantry("webhooks", "deliveries", "--org", org.id, "--status", "pending", env=env, cwd=tmp_path)
        bad = await tenantry("webhooks", "deliveries", "--org", org.id, "--status", "lost", env=env, cwd=tmp_path)

    assert worked.returncode == 0, worked
    assert {r.path for r in receiver.requests} == {"/ok", "/down"}
    assert listed.returncode == 0, listed
    out = words(listed.stdout)
    assert "succeeded" in out
    assert "pending" in out  # the 503 is retried in a minute
    assert "503" in out
    assert "succeeded" not in words(failed.stdout)
    assert bad.returncode == 2
