"""Sessions: refresh-token rotation with reuse detection, sign-out and revocation that bite at once."""

from __future__ import annotations

import asyncio

import httpx

from tests.factories.identity import Account, login, signed_in


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/v1/auth/refresh", json={"refresh_token": token})


async def test_refresh_returns_a_new_pair_and_spends_the_old_token(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)

    first = await _refresh(client, account.refresh_token)
    body = first.json()

    assert first.status_code == 200
    assert body["refresh_token"] != account.refresh_token
    assert body["access_token"] != account.access_token
    assert body["token_type"] == "Bearer"
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200


async def test_reusing_a_spent_refresh_token_revokes_the_whole_session(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    stolen = account.refresh_token
    newest = (await _refresh(client, stolen)).json()

    replay = await _refresh(client, stolen)

    assert replay.status_code == 401
    assert replay.json()["code"] == "refresh_token_reused"
    # The legitimate holder's newest tokens die with the session.
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {newest['access_token']}"})
    assert me.status_code == 401
    assert (await _refresh(client, newest["refresh_token"])).status_code == 401


async def test_concurrent_refreshes_with_one_token_let_at_most_one_through(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)

    answers = await asyncio.gather(*(_refresh(client, account.refresh_token) for _ in range(4)))

    assert [r.status_code for r in answers].count(200) == 1
    assert all(r.status_code in (200, 401) for r in answers)


async def test_an_unknown_refresh_token_is_unauthorized(client: httpx.AsyncClient) -> None:
    response = await _refresh(client, "rt_this-was-never-issued")

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


async def test_logout_rejects_the_access_token_on_the_next_request(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    assert (await client.get("/v1/me", headers=account.headers)).status_code == 200  # now cached

    logout = await client.post("/v1/auth/logout", headers=account.headers)
    after = await client.get("/v1/me", headers=account.headers)

    assert logout.status_code == 204
    assert after.status_code == 401
    assert (await _refresh(client, account.refresh_token)).status_code == 401


async def test_sessions_are_listed_with_the_current_one_marked(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    other = await login(
        client, Account(account.email, account.password, account.user_id), **{"User-Agent": "Phone/1.0"}
    )

    response = await client.get("/v1/me/sessions", headers=account.headers)

    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 2
    assert [i["current"] for i in items].count(True) == 1
    assert {"id", "created_at", "last_used_at", "ip", "user_agent", "current"} <= set(items[0])
    assert {i["user_agent"] for i in items} >= {"Phone/1.0"}
    assert all(i["ip"] == "127.0.0.1" for i in items)
    assert other.access_token != account.access_token


async def test_deleting_a_session_stops_its_tokens_at_once(client: httpx.AsyncClient) -> None:
    laptop = await signed_in(client)
    phone = await login(client, Account(laptop.email, laptop.password, laptop.user_id))
    assert (await client.get("/v1/me", headers=phone.headers)).status_code == 200
    sessions = (await client.get("/v1/me/sessions", headers=laptop.headers)).json()["items"]
    phone_session = next(s for s in sessions if not s["current"])

    response = await client.delete(f"/v1/me/sessions/{phone_session['id']}", headers=laptop.headers)

    assert response.status_code == 204
    assert (await client.get("/v1/me", headers=phone.headers)).status_code == 401
    assert (await _refresh(client, phone.refresh_token)).status_code == 401
    assert (await client.get("/v1/me", headers=laptop.headers)).status_code == 200
    remaining = (await client.get("/v1/me/sessions", headers=laptop.headers)).json()["items"]
    assert [s["id"] for s in remaining] == [s["id"] for s in sessions if s["current"]]


async def test_another_users_session_is_not_found_and_survives(client: httpx.AsyncClient) -> None:
    victim = await signed_in(client)
    attacker = await signed_in(client)
    victim_session = (await client.get("/v1/me/sessions", headers=victim.headers)).json()["items"][0]

    response = await client.delete(f"/v1/me/sessions/{victim_session['id']}", headers=attacker.headers)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert (await client.get("/v1/me", headers=victim.headers)).status_code == 200


async def test_profile_can_be_read_and_renamed(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)

    renamed = await client.patch("/v1/me", json={"name": "New Name"}, headers=account.headers)
    me = await client.get("/v1/me", headers=account.headers)

    assert renamed.status_code == 200
    assert renamed.json()["name"] == "New Name"
    assert me.json()["name"] == "New Name"  # not a stale cached copy
    assert me.json()["email"] == account.email


async def test_an_empty_name_is_a_validation_error(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)

    response = await client.patch("/v1/me", json={"name": ""}, headers=account.headers)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_a_spent_refresh_token_is_reported_as_reused_every_time(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)
    await _refresh(client, account.refresh_token)

    first = await _refresh(client, account.refresh_token)
    second = await _refresh(client, account.refresh_token)

    assert first.json()["code"] == second.json()["code"] == "refresh_token_reused"


async def test_a_blank_name_is_a_validation_error(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)

    response = await client.patch("/v1/me", json={"name": "   "}, headers=account.headers)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
