"""The ``tenantry`` command, run as a person would run it."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PG_ADMIN_URL, _create_pg_database, _drop_pg_database, free_port
from tests.factories.identity import PASSWORD, new_email
from tests.processes import Server, run, tenantry_env

pytestmark = pytest.mark.slow


def _sqlite_env(tmp_path: Path) -> dict[str, str]:
    return tenantry_env(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", data_dir=str(tmp_path / "data"))


def test_migrate_brings_a_fresh_sqlite_database_to_the_head_twice_over(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path)

    first = run("migrate", env=env, cwd=tmp_path)
    second = run("migrate", env=env, cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "revision 0001" in first.stdout


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    name = f"tenantry_cli_{uuid.uuid4().hex[:10]}"
    asyncio.run(_create_pg_database(name))
    host = PG_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0]
    yield f"postgresql+asyncpg://{host}/{name}"
    asyncio.run(_drop_pg_database(name))


def test_serve_refuses_an_unmigrated_postgresql_database_until_migrate_runs(empty_pg_url: str, tmp_path: Path) -> None:
    env = tenantry_env(database_url=empty_pg_url, data_dir=str(tmp_path / "data"))

    refused = run("serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    migrated = run("migrate", env=env, cwd=tmp_path)
    worker = run("worker", "--once", env=env, cwd=tmp_path)

    assert refused.returncode != 0
    assert "tenantry migrate" in refused.stderr
    assert migrated.returncode == 0, migrated.stderr
    assert worker.returncode == 0, worker.stderr


def test_without_smtp_mail_lands_in_the_local_mailbox_and_its_token_works(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path)
    email = new_email()
    with Server(port=free_port(), env=env, cwd=tmp_path) as server:
        created = httpx.post(f"{server.url}/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "M"})
        assert created.status_code == 201
        listing = ""
        for _ in range(50):
            listing = run("mail", "list", env=env, cwd=tmp_path).stdout
            if email in listing:
                break
            time.sleep(0.1)
        match = re.search(r"token=([A-Za-z0-9_\-]+)", listing)
        assert email in listing
        assert match

        verified = httpx.post(f"{server.url}/v1/auth/verify-email", json={"token": match.group(1)})

    assert verified.status_code == 200
    assert verified.json()["email_verified"] is True


def test_keys_rotate_while_serving_keeps_old_tokens_and_publishes_the_new_key(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path)
    with Server(port=free_port(), env=env, cwd=tmp_path) as server:
        email = new_email()
        httpx.post(f"{server.url}/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "K"})
        before = httpx.post(f"{server.url}/v1/auth/login", json={"email": email, "password": PASSWORD}).json()

        rotated = run("keys", "rotate", env=env, cwd=tmp_path)
        time.sleep(1.1)  # servers look at the key file at most once a second
        after = httpx.post(f"{server.url}/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
        jwks = httpx.get(f"{server.url}/.well-known/jwks.json").json()
        old_still_works = httpx.get(
            f"{server.url}/v1/me", headers={"Authorization": f"Bearer {before['access_token']}"}
        ).status_code

    import jwt

    assert rotated.returncode == 0, rotated.stderr
    kids = [k["kid"] for k in jwks["keys"]]
    old_kid = jwt.get_unverified_header(before["access_token"])["kid"]
    new_kid = jwt.get_unverified_header(after["access_token"])["kid"]
    assert len(kids) == 2
    assert old_kid in kids
    assert new_kid in kids
    assert new_kid != old_kid
    assert old_still_works == 200
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == new_kid)).key
    assert jwt.decode(after["access_token"], key, algorithms=["EdDSA"], issuer="http://127.0.0.1:8000")["sub"]
