"""Rate limits across real ``tenantry serve`` processes: one budget for the whole fleet while Redis is up,
and the documented policy once it is gone (per-process limits, sign-in refused with 503, never a 500).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.factories.identity import login, signup
from tests.limits import GENEROUS_LIMITS
from tests.servers import BASE_URL, Fleet, tenantry_env

pytestmark = pytest.mark.slow

PROBLEM_JSON = "application/problem+json"


def limits(**policies: dict[str, object]) -> str:
    """Small budgets for ``policies``; every other one stays too large to matter."""
    return json.dumps({**json.loads(GENEROUS_LIMITS), **{name.replace("_", "."): v for name, v in policies.items()}})


def fresh_address() -> str:
    """A client address no other run has used, so its budget in the shared Redis database starts full."""
    raw = uuid.uuid4().bytes
    return f"198.{18 + raw[0] % 2}.{raw[1]}.{raw[2] % 254 + 1}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_two_servers_sharing_redis_enforce_one_sign_in_budget_together(
    database_url: str, tmp_path: Path, fleet: Fleet
) -> None:
    env = tenantry_env(
        database_url=database_url,
        data_dir=str(tmp_path / "data"),
        redis_url=REDIS_URL,
        base_url=BASE_URL,
        trusted_proxies="127.0.0.1",  # so the test can pose as a client no earlier run has been
        # A sign-in attempt costs one unit, whatever its method: five units make five attempts.
        rate_limits=limits(login_ip={"limit": 5, "period": 3600, "burst": 5}),
    )
    a, b = await fleet.start(env, env)
    client = {"X-Forwarded-For": fresh_address()}
    guess = {"email": "nobody@example.com", "password": "a wrong guess of a password"}

    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        answers = [await http.post("/v1/auth/login", json=guess, headers=client) for http in (on_a, on_b) * 5]
        elsewhere = await on_b.post("/v1/auth/login", json=guess, headers={"X-Forwarded-For": fresh_address()})

    allowed = [answer for answer in answers if answer.status_code != 429]
    assert [answer.status_code for answer in answers] == [401] * 5 + [429] * 5, [a.text for a in answers]
    assert [int(answer.headers["RateLimit"].split("r=")[1].split(";")[0]) for answer in allowed] == [4, 3, 2, 1, 0]
    for refused in answers[5:]:
        assert refused.headers["content-type"].startswith(PROBLEM_JSON)
        assert refused.json()["code"] == "too_many_requests"
        assert int(refused.headers["Retry-After"]) >= 1
    assert elsewhere.status_code == 401


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_with_redis_gone_the_api_is_limited_per_process_and_sign_in_is_refused_never_a_500(
    database_url: str, tmp_path: Path, fleet: Fleet, own_redis: tuple[str, subprocess.Popen[bytes]]
) -> None:
    redis_url, redis_server = own_redis
    env = tenantry_env(
        database_url=database_url,
        data_dir=str(tmp_path / "data"),
        redis_url=redis_url,
        base_url=BASE_URL,
        rate_limits=limits(api_ip={"limit": 4, "period": 3600, "burst": 4}),
    )
    a, b = await fleet.start(env, env)

    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        account = await login(on_a, await signup(on_a))
        before = [await http.get("/v1/me", headers=account.headers) for http in (on_a, on_b)]
        assert [answer.status_code for answer in before] == [200, 200], [answer.text for answer in before]
        assert [answer.headers["RateLimit"] for answer in before][1].startswith('"api.ip";r=2;')  # one shared budget

        redis_server.kill()
        redis_server.wait()

        # Each process now counts on its own: a full budget of 4 on each, and still a limit.
        on_each = {
            server: [await http.get("/v1/me", headers=account.headers) for _ in range(5)]
            for server, http in (("a", on_a), ("b", on_b))
        }
        sign_in = [
            await http.post("/v1/auth/login", json={"email": account.email, "password": account.password})
            for http in (on_a, on_b)
        ]

    for server, answers in on_each.items():
        assert [answer.status_code for answer in answers] == [200] * 4 + [429], (server, [a.text for a in answers])
    for answer in sign_in:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith(PROBLEM_JSON)
        assert answer.json()["code"] == "rate_limiter_unavailable"
        assert int(answer.headers["Retry-After"]) >= 1
