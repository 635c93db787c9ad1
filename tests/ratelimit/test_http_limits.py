"""Rate limits as a client meets them over HTTP: the headers, the 429, what a request costs, whose budget
it spends (address, user or API key, organization), shadow mode, requests at once, and load shedding.

Each test builds its own application with small budgets for the policy it is about (every other policy
stays too large to matter) and speaks to it in process, from a chosen client address.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tenantry.app import create_app
from tenantry.platform import Platform
from tenantry.settings import Settings
from tests.conftest import REDIS_URL
from tests.factories.identity import Account, login, signed_in
from tests.factories.tenancy import add_member, bearer, create_api_key, create_org
from tests.limits import GENEROUS_LIMITS

PROBLEM_JSON = "application/problem+json"


@asynccontextmanager
async def serving(
    tmp_path: Path, database_url: str, limits: dict[str, object], **settings: object
) -> AsyncIterator[FastAPI]:
    """An application where ``limits`` override the generous budgets every other test runs with."""
    values: dict[str, object] = {
        "database_url": database_url,
        "data_dir": tmp_path / "data",
        "base_url": "http://testserver",
        "log_level": "warning",
        "rate_limits": json.dumps({**json.loads(GENEROUS_LIMITS), **limits}),
        **settings,
    }
    app = create_app(Settings(**values), access_log=False)  # type: ignore[arg-type]
    async with LifespanManager(app):
        yield app


@asynccontextmanager
async def connect(app: FastAPI, peer: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests come from ``peer`` (the socket address the server sees)."""
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


_ITEM = re.compile(r'\s*"([^"]+)"((?:;[a-z]+=[^;,]+)*)\s*(?:,|$)')


def parse_limits(header: str) -> dict[str, dict[str, int]]:
    """``"api.ip";r=9;t=6, "api.principal";r=4;t=12`` -> {"api.ip": {"r": 9, "t": 6}, ...}; fails on bad syntax."""
    found: dict[str, dict[str, int]] = {}
    position = 0
    while position < len(header):
        item = _ITEM.match(header, position)
        assert item is not None, f"not the draft's syntax at {position}: {header!r}"
        params = (p.split("=", 1) for p in item.group(2).split(";") if p)
        found[item.group(1)] = {key: int(value) for key, value in params}
        position = item.end()
    return found


def remaining(response: httpx.Response, policy: str) -> int:
    return parse_limits(response.headers["RateLimit"])[policy]["r"]


def statuses(responses: Iterable[httpx.Response]) -> list[int]:
    return [response.status_code for response in responses]


def assert_too_many(response: httpx.Response, policy: str) -> int:
    """A 429 as a client reads it; returns the seconds it says to wait."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["code"] == "too_many_requests"
    wait = int(response.headers["Retry-After"])
    assert wait >= 1
    assert remaining(response, policy) == 0
    assert policy in parse_limits(response.headers["RateLimit-Policy"])
    return wait


async def test_limited_responses_say_their_policy_and_what_remains_and_health_checks_say_nothing(
    tmp_path: Path, database_url: str
) -> None:
    async with (
        serving(tmp_path, database_url, {"api.ip": {"limit": 10, "period": 60, "burst": 10}}) as app,
        connect(app) as http,
    ):
        account = await signed_in(http)
        answers = [await http.get("/v1/me", headers=account.headers) for _ in range(3)]
        health = await http.get("/healthz")

    assert statuses(answers) == [200, 200, 200]
    for answer in answers:
        policies = parse_limits(answer.headers["RateLimit-Policy"])
        assert policies["api.ip"] == {"q": 10, "w": 60}
        assert set(policies) == set(parse_limits(answer.headers["RateLimit"]))
        assert parse_limits(answer.headers["RateLimit"])["api.ip"]["t"] >= 1
    assert [remaining(answer, "api.ip") for answer in answers] == [9, 8, 7]
    assert health.status_code == 200
    assert "RateLimit" not in health.headers
    assert "RateLimit-Policy" not in health.headers


async def test_over_the_limit_is_429_with_retry_after_and_after_waiting_requests_pass_again(
    tmp_path: Path, database_url: str
) -> None:
    async with (
        serving(tmp_path, database_url, {"api.ip": {"limit": 2, "period": 1, "burst": 2}}) as app,
        connect(app) as http,
    ):
        account = await signed_in(http)
        answers = [await http.get("/v1/me", headers=account.headers) for _ in range(2)]
        # Two a second refill fast, so keep asking until refused (a slow machine may see one refill).
        for _ in range(50):
            refused = await http.get("/v1/me", headers=account.headers)
            if refused.status_code != 200:
                break
        wait = assert_too_many(refused, "api.ip")
        await asyncio.sleep(wait)
        again = await http.get("/v1/me", headers=account.headers)

    assert statuses(answers) == [200, 200]
    assert again.status_code == 200, again.text


async def test_a_write_costs_more_than_a_read(tmp_path: Path, database_url: str) -> None:
    async with serving(tmp_path, database_url, {"api.ip": {"limit": 10, "period": 60, "burst": 10}}) as app:
        async with connect(app) as setup:
            account = await signed_in(setup)
        async with connect(app, "192.0.2.1") as writer, connect(app, "192.0.2.2") as reader:
            writes = [await writer.patch("/v1/me", json={"name": f"N{i}"}, headers=account.headers) for i in range(5)]
            after_writes = await writer.get("/v1/me", headers=account.headers)
            reads = [await reader.get("/v1/me", headers=account.headers) for _ in range(10)]
            after_reads = await reader.get("/v1/me", headers=account.headers)

    assert statuses(writes) == [200] * 5
    assert [remaining(write, "api.ip") for write in writes] == [8, 6, 4, 2, 0]
    assert_too_many(after_writes, "api.ip")
    assert statuses(reads) == [200] * 10
    assert_too_many(after_reads, "api.ip")


def forged(token: str, signed_by: str) -> str:
    """``token``'s header and claims under another token's signature: names the same user, verifies as no one."""
    header, claims, _ = token.split(".")
    return f"{header}.{claims}.{signed_by.split('.')[2]}"


async def test_a_user_has_one_budget_whatever_the_session_and_an_api_key_has_its_own(
    tmp_path: Path, database_url: str
) -> None:
    async with (
        serving(tmp_path, database_url, {"api.principal": {"limit": 5, "period": 60, "burst": 5}}) as app,
        connect(app) as http,
    ):
        org = await create_org(http)
        key = str((await create_api_key(http, org, permissions=["org.read"]))["key"])
        first = await signed_in(http)
        second = Account(first.email, first.password, first.user_id)
        await login(http, second)  # the same user, a second session
        other = await signed_in(http)

        by_sessions = [await http.get("/v1/me", headers=s.headers) for s in (first, second) * 3]
        forgeries = [await http.get("/v1/me", headers=bearer(forged(other.access_token, first.access_token)))]
        forgeries += [await http.get("/v1/me", headers=bearer("garbage")) for _ in range(5)]
        by_other = await http.get("/v1/me", headers=other.headers)
        by_key = await http.get(org.path(), headers=bearer(key))
        made_up_key = await http.get(org.path(), headers=bearer("tnt_made_up"))

    assert statuses(by_sessions[:5]) == [200] * 5
    assert_too_many(by_sessions[5], "api.principal")
    # A token that does not verify names no principal: it is turned away, and spends no one's budget.
    assert statuses(forgeries) == [401] * 6
    assert all("api.principal" not in parse_limits(f.headers["RateLimit"]) for f in forgeries)
    assert by_other.status_code == 200
    assert remaining(by_other, "api.principal") == 4
    assert by_key.status_code == 200, by_key.text
    assert remaining(by_key, "api.principal") == 4
    assert made_up_key.status_code == 401
    assert remaining(made_up_key, "api.principal") == 4


async def test_requests_naming_one_organization_share_its_budget_across_users(
    tmp_path: Path, database_url: str
) -> None:
    async with serving(tmp_path, database_url, {"api.org": {"limit": 4, "period": 60, "burst": 4}}) as app:
        platform = app.state.platform
        assert isinstance(platform, Platform)
        async with connect(app) as http:
            org, elsewhere = await create_org(http), await create_org(http)
            member = await add_member(http, org, platform)

            answers = [await http.get(org.path(), headers=who.headers) for who in (org.owner, member) * 2]
            refused = await http.get(org.path("/members"), headers=member.headers)
            other_org = await http.get(elsewhere.path(), headers=elsewhere.owner.headers)
            not_naming_it = await http.get("/v1/me", headers=org.owner.headers)

    assert statuses(answers) == [200] * 4
    assert_too_many(refused, "api.org")
    assert other_org.status_code == 200
    assert remaining(other_org, "api.org") == 3
    assert not_naming_it.status_code == 200
    assert "api.org" not in parse_limits(not_naming_it.headers["RateLimit"])


async def test_a_forwarded_for_header_from_an_untrusted_peer_buys_no_new_budget(
    tmp_path: Path, database_url: str
) -> None:
    async with serving(tmp_path, database_url, {"api.ip": {"limit": 3, "period": 60, "burst": 3}}) as app:
        async with connect(app) as setup:
            account = await signed_in(setup)
        async with connect(app, "192.0.2.7") as http:
            spent = [await http.get("/v1/me", headers=account.headers) for _ in range(3)]
            spoofed = [
                await http.get("/v1/me", headers={**account.headers, "X-Forwarded-For": address})
                for address in ("198.51.100.1", "198.51.100.2", "198.51.100.3, 203.0.113.9", "127.0.0.1")
            ]

    assert statuses(spent) == [200] * 3
    for answer in spoofed:
        assert_too_many(answer, "api.ip")


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(
    tmp_path: Path, database_url: str
) -> None:
    limits = {"api.ip": {"limit": 3, "period": 60, "burst": 3}}
    async with (
        serving(tmp_path, database_url, limits, trusted_proxies="127.0.0.1") as app,
        connect(app) as http,  # the proxy, on this machine
    ):
        account = await signed_in(http)

        def of(client: str) -> dict[str, str]:
            return {**account.headers, "X-Forwarded-For": client}

        first = [await http.get("/v1/me", headers=of("198.51.100.1")) for _ in range(4)]
        # The proxy appends the address it saw: a client cannot hide behind an address it writes itself.
        prepended = await http.get("/v1/me", headers=of("198.51.100.77, 198.51.100.1"))
        second = [await http.get("/v1/me", headers=of("198.51.100.2")) for _ in range(3)]

    assert statuses(first[:3]) == [200] * 3
    assert_too_many(first[3], "api.ip")
    assert_too_many(prepended, "api.ip")
    assert statuses(second) == [200] * 3
    assert [remaining(answer, "api.ip") for answer in second] == [2, 1, 0]


async def test_in_shadow_mode_requests_over_the_limit_pass_and_report_nothing_left(
    tmp_path: Path, database_url: str
) -> None:
    limits = {"api.ip": {"limit": 1, "period": 60, "burst": 1, "shadow": True}}
    async with serving(tmp_path, database_url, limits) as app, connect(app) as http:
        account = await signed_in(http)
        answers = [await http.get("/v1/me", headers=account.headers) for _ in range(4)]

    assert statuses(answers) == [200] * 4
    assert [remaining(answer, "api.ip") for answer in answers] == [0] * 4
    assert all(parse_limits(a.headers["RateLimit-Policy"])["api.ip"] == {"q": 1, "w": 60} for a in answers)


async def test_a_second_request_at_once_by_the_same_user_is_refused_while_the_first_runs(
    tmp_path: Path, database_url: str
) -> None:
    async with serving(tmp_path, database_url, {}, concurrent_requests_per_principal=1) as app, connect(app) as http:
        account = await signed_in(http)
        second_session = await login(http, Account(account.email, account.password, account.user_id))
        someone_else = await signed_in(http)
        # Checking a password hashes it (argon2, in a thread): the first request is still running when the next
        # arrives, whichever session sends it.
        change = {"current_password": "not the password", "new_password": "another long passphrase"}
        together = await asyncio.gather(
            http.post("/v1/me/password", json=change, headers=account.headers),
            http.post("/v1/me/password", json=change, headers=second_session.headers),
            http.post("/v1/me/password", json=change, headers=someone_else.headers),
        )
        later = await http.post("/v1/me/password", json=change, headers=second_session.headers)

    same_user, other = sorted(together[:2], key=lambda answer: answer.status_code), together[2]
    assert statuses(same_user) == [400, 429], [answer.text for answer in same_user]  # 400: the wrong password
    at_once = same_user[1]
    assert at_once.headers["content-type"].startswith(PROBLEM_JSON)
    assert at_once.json()["code"] == "too_many_requests"
    assert "at once" in at_once.json()["detail"]
    assert int(at_once.headers["Retry-After"]) >= 1
    assert other.status_code == 400, other.text
    assert later.status_code == 400, later.text  # the first request's slot was given back


async def test_a_late_event_loop_sheds_console_pages_first_and_never_health_checks(
    tmp_path: Path, database_url: str
) -> None:
    shedding = {"shed_lag_soft": 0.05, "shed_lag_hard": 60.0}
    async with serving(tmp_path, database_url, {}, **shedding) as app, connect(app) as http:
        account = await signed_in(http)
        assert (await http.get("/signup")).status_code == 200

        time.sleep(0.5)  # noqa: ASYNC251 (the point: a stall that holds the event loop)
        page = await http.get("/signup")
        health = await http.get("/healthz")
        api = await http.get("/v1/me", headers=account.headers)

        deadline = time.monotonic() + 10
        recovered = page
        while recovered.status_code == 503 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            recovered = await http.get("/signup")

    assert page.status_code == 503, page.text
    assert page.headers["content-type"].startswith(PROBLEM_JSON)
    assert page.json()["code"] == "overloaded"
    assert int(page.headers["Retry-After"]) >= 1
    assert health.status_code == 200
    assert api.status_code == 200, api.text  # normal priority is shed only past the hard lag
    assert recovered.status_code == 200, "the console never came back once the loop kept time"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_with_rate_limits_disabled_nothing_is_counted(tmp_path: Path, database_url: str) -> None:
    limits = {"api.ip": {"limit": 1, "period": 60, "burst": 1}}
    async with serving(tmp_path, database_url, limits, rate_limits_enabled=False) as app, connect(app) as http:
        account = await signed_in(http)
        answers = [await http.get("/v1/me", headers=account.headers) for _ in range(3)]

    assert statuses(answers) == [200] * 3
    assert "RateLimit" not in answers[0].headers


def fresh_address() -> str:
    """A client address no other run has used, so its budget in the shared Redis database starts full."""
    raw = uuid.uuid4().bytes
    return f"198.{18 + raw[0] % 2}.{raw[1]}.{raw[2] % 254 + 1}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_redis_the_headers_the_429_and_requests_at_once_are_as_in_process(
    tmp_path: Path, database_url: str
) -> None:
    limits = {"api.ip": {"limit": 6, "period": 60, "burst": 6}}
    async with serving(tmp_path, database_url, limits, redis_url=REDIS_URL, concurrent_requests_per_principal=1) as app:
        async with connect(app, fresh_address()) as http:
            account = await signed_in(http)
        async with connect(app, fresh_address()) as http:
            answers = [await http.get("/v1/me", headers=account.headers) for _ in range(7)]
        async with connect(app, fresh_address()) as http:
            change = {"current_password": "not the password", "new_password": "another long passphrase"}
            together = await asyncio.gather(
                *(http.post("/v1/me/password", json=change, headers=account.headers) for _ in range(2))
            )
            later = await http.get("/v1/me", headers=account.headers)

    assert statuses(answers[:6]) == [200] * 6
    assert [remaining(answer, "api.ip") for answer in answers[:6]] == [5, 4, 3, 2, 1, 0]
    assert set(parse_limits(answers[0].headers["RateLimit-Policy"])) == {"api.ip", "api.principal"}
    assert_too_many(answers[6], "api.ip")
    assert sorted(statuses(together)) == [400, 429], [answer.text for answer in together]
    assert "at once" in max(together, key=lambda answer: answer.status_code).json()["detail"]
    assert later.status_code == 200, later.text  # the lease was given back
