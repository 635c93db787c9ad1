"""Revocation across real server processes: a revoked session is refused by every process at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL, free_port
from tests.factories.identity import PASSWORD, new_email
from tests.processes import Server, tenantry_env

pytestmark = pytest.mark.slow


def _sign_in(base: str) -> dict[str, str]:
    email = new_email()
    created = httpx.post(f"{base}/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "P"})
    assert created.status_code == 201, created.text
    tokens = httpx.post(f"{base}/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def _me(base: str, headers: dict[str, str]) -> int:
    return httpx.get(f"{base}/v1/me", headers=headers).status_code


def test_logout_on_one_process_is_seen_by_the_other_at_once(database_url: str, tmp_path: Path) -> None:
    """No Redis: the processes share a data dir, and hear of revocations through it."""
    env = tenantry_env(database_url=database_url, data_dir=str(tmp_path / "data"), base_url="http://testserver")
    with Server(port=free_port(), env=env, cwd=tmp_path) as a, Server(port=free_port(), env=env, cwd=tmp_path) as b:
        first = _sign_in(a.url)
        second = _sign_in(a.url)
        assert (_me(a.url, first), _me(b.url, first), _me(b.url, second)) == (200, 200, 200)  # both cache them

        assert httpx.post(f"{a.url}/v1/auth/logout", headers=first).status_code == 204
        assert _me(b.url, first) == 401

        session = httpx.get(f"{b.url}/v1/me/sessions", headers=second).json()["items"][0]["id"]
        assert httpx.delete(f"{b.url}/v1/me/sessions/{session}", headers=second).status_code == 204
        assert _me(a.url, second) == 401
        assert _me(b.url, second) == 401


def test_with_redis_the_news_needs_no_shared_disk(migrated_databases: dict[str, str], tmp_path: Path) -> None:
    """Cluster shape: separate data dirs (only the signing keys copied), revocations carried by Redis."""
    url = migrated_databases["postgresql"]
    env_a = tenantry_env(database_url=url, data_dir=str(tmp_path / "a"), redis_url=REDIS_URL)
    env_b = tenantry_env(database_url=url, data_dir=str(tmp_path / "b"), redis_url=REDIS_URL)
    with Server(port=free_port(), env=env_a, cwd=tmp_path) as a:
        shutil.copytree(tmp_path / "a" / "keys", tmp_path / "b" / "keys")
        with Server(port=free_port(), env=env_b, cwd=tmp_path) as b:
            headers = _sign_in(a.url)
            assert (_me(a.url, headers), _me(b.url, headers)) == (200, 200)

            assert httpx.post(f"{a.url}/v1/auth/logout", headers=headers).status_code == 204

            assert _me(b.url, headers) == 401

            # Sign-in failures count against one budget for the whole fleet, not one per process.
            victim = new_email()
            httpx.post(f"{a.url}/v1/auth/signup", json={"email": victim, "password": PASSWORD, "name": "V"})
            guesses = [
                httpx.post(f"{server.url}/v1/auth/login", json={"email": victim, "password": "wrong guess"})
                for server in (a, b) * 5
            ]
            assert [g.status_code for g in guesses] == [401] * 10
            right = httpx.post(f"{b.url}/v1/auth/login", json={"email": victim, "password": PASSWORD})
            assert right.status_code == 429


def test_several_workers_of_one_server_all_refuse_a_revoked_session(
    migrated_databases: dict[str, str], tmp_path: Path
) -> None:
    env = tenantry_env(database_url=migrated_databases["sqlite"], data_dir=str(tmp_path / "data"))
    with Server(port=free_port(), env=env, cwd=tmp_path, workers=2) as server:
        headers = _sign_in(server.url)
        with httpx.Client(base_url=server.url) as client:
            assert all(client.get("/v1/me", headers=headers).status_code == 200 for _ in range(20))
        assert httpx.post(f"{server.url}/v1/auth/logout", headers=headers).status_code == 204
        # New connections spread over both workers; every single one must refuse.
        assert [_me(server.url, headers) for _ in range(20)] == [401] * 20
