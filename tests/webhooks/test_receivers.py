"""Webhooks against receivers that misbehave: each is a real HTTP server on loopback.

A receiver that answers late or never, answers 500, asks to be called back later (429 with
Retry-After), redirects, streams a huge body, or says the endpoint is gone (410): each attempt is
bounded, logged where the endpoint's owner reads it (``GET …/deliveries``), and retried on the
configured schedule. What a subscriber checks is checked as a subscriber would: signatures with
the published Standard Webhooks verifier, the same ``webhook-id`` on every retry, the endpoint's
own headers. The schedule is short here (1 s, 1 s) and the timeout 2 s.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from aiohttp import web

from tenantry.settings import Settings
from tests.factories.tenancy import Org, create_org, create_team
from tests.webhooks.receiver import Received, Receiver, SilentServer, Stream, answer, in_turn, redirect

SCHEDULE = (1.0, 1.0)
TIMEOUT = 2.0
JITTER = 0.1  # each delay may be this much shorter (or longer) than the schedule says
HUGE = 50 * 1024 * 1024
READ_LIMIT = 64 * 1024
RETRY_AFTER = 2  # seconds; the schedule's 1 s (±10%) is sooner
Deliveries = list[dict[str, Any]]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, with a short retry schedule and timeout, and loopback receivers allowed."""
    return Settings(
        **{
            **settings.model_dump(),
            "webhook_retry_schedule": ",".join(f"{d:g}" for d in SCHEDULE),
            "webhook_timeout_seconds": TIMEOUT,
            "webhook_allow_private": True,
        }
    )


async def add_endpoint(client: httpx.AsyncClient, org: Org, url: str, **body: Any) -> dict[str, Any]:
    """A new endpoint of ``org`` for ``url`` (only ``team.created`` unless told otherwise)."""
    payload = {"url": url, "event_types": ["team.created"], **body}
    response = await client.post(org.path("/webhooks"), json=payload, headers=org.owner.headers)
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()
    return found


async def deliveries(client: httpx.AsyncClient, org: Org, endpoint: dict[str, Any], **params: str) -> Deliveries:
    response = await client.get(
        org.path(f"/webhooks/{endpoint['id']}/deliveries"), params=params, headers=org.owner.headers
    )
    assert response.status_code == 200, response.text
    items: Deliveries = response.json()["items"]
    return items


async def deliveries_once(
    client: httpx.AsyncClient,
    org: Org,
    endpoint: dict[str, Any],
    condition: Callable[[Deliveries], bool],
    *,
    within: float = 60.0,
) -> Deliveries:
    """The endpoint's deliveries, as soon as ``condition`` holds for them (polled; fails after ``within`` s)."""
    deadline = time.monotonic() + within
    while True:
        found = await deliveries(client, org, endpoint)
        if condition(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries not as expected within {within}s: {found}")
        await asyncio.sleep(0.1)


def attempted(count: int) -> Callable[[Deliveries], bool]:
    """One delivery, with at least ``count`` attempts logged."""
    return lambda found: len(found) == 1 and len(found[0]["attempts"]) >= count


def settled(found: Deliveries) -> bool:
    """One delivery, done with (succeeded or failed)."""
    return len(found) == 1 and found[0]["status"] != "pending"


async def trickle(request: web.Request, _received: Received) -> web.StreamResponse:
    """200 and a body that never ends: a byte every half second."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = 1_000_000
    await response.prepare(request)
    while True:
        await response.write(b" ")
        await asyncio.sleep(0.5)


def gaps(arrivals: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(arrivals)]


async def test_a_delivery_is_signed_carries_the_event_and_the_endpoint_headers(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    org = await create_org(client)
    url = receiver.route("/hooks", answer(204))
    endpoint = await add_endpoint(client, org, url, headers={"X-Tenant-Tag": "acme", "Authorization": "Basic YWJj"})
    receiver.trust("/hooks", endpoint["secret"])

    team_id = await create_team(client, org, name="Payments")
    (delivery,) = await deliveries_once(client, org, endpoint, settled)
    (request,) = receiver.at("/hooks")
    shown = await client.get(org.path(f"/webhooks/{endpoint['id']}/secret"), headers=org.owner.headers)

    assert endpoint["secret"].startswith("whsec_")
    assert (endpoint["url"], endpoint["event_types"], endpoint["enabled"]) == (url, ["team.created"], True)
    assert request.verified is True
    assert request.verifies(shown.json()["secret"])
    assert not request.verifies("whsec_" + "A" * 43 + "=")
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"].startswith("application/json")
    assert (request.headers["x-tenant-tag"], request.headers["authorization"]) == ("acme", "Basic YWJj")
    body = request.json()
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "team.created"
    assert body["data"]["team"] == {"id": team_id, "name": "Payments"}
    assert request.webhook_id == delivery["event_id"]
    assert (delivery["event_type"], delivery["status"], delivery["next_attempt_at"]) == (
        "team.created",
        "succeeded",
        None,
    )
    (attempt,) = delivery["attempts"]
    assert (attempt["response_status"], attempt["error"]) == (204, None)
    assert isinstance(attempt["duration_ms"], int)
    assert attempt["duration_ms"] >= 0


async def test_a_test_event_goes_to_its_endpoint_on_request(client: httpx.AsyncClient, receiver: Receiver) -> None:
    org = await create_org(client)
    endpoint = await add_endpoint(client, org, receiver.route("/tested", answer(200)))
    other = await add_endpoint(client, org, receiver.route("/other", answer(200)), event_types=None)
    receiver.trust("/tested", endpoint["secret"])

    sent = await client.post(org.path(f"/webhooks/{endpoint['id']}/test"), headers=org.owner.headers)
    (delivery,) = await deliveries_once(client, org, endpoint, settled)

    assert sent.status_code == 202, sent.text
    (request,) = receiver.at("/tested")
    assert request.verified is True
    assert request.json()["type"] == "webhook.test"
    assert (delivery["event_type"], delivery["status"], request.webhook_id) == (
        "webhook.test",
        "succeeded",
        delivery["event_id"],
    )
    # A test is sent to the endpoint it names, only there (this one, subscribed to everything, gets other events).
    assert [d for d in await deliveries(client, org, other) if d["event_type"] == "webhook.test"] == []
    assert [r for r in receiver.at("/other") if r.json()["type"] == "webhook.test"] == []


async def test_a_failing_receiver_is_retried_on_the_schedule_with_the_same_id_then_failed(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    org = await create_org(client)
    url = receiver.route("/down", in_turn(answer(500), answer(500), answer(500), answer(200)))
    endpoint = await add_endpoint(client, org, url)
    receiver.trust("/down", endpoint["secret"])

    await create_team(client, org)
    (failed,) = await deliveries_once(client, org, endpoint, settled)
    tries = receiver.at("/down")

    assert failed["status"] == "failed"
    assert failed["next_attempt_at"] is None
    assert [a["response_status"] for a in failed["attempts"]] == [500] * (1 + len(SCHEDULE))
    assert all(a["error"] is None or isinstance(a["error"], str) for a in failed["attempts"])
    assert [r.status for r in tries] == [500] * (1 + len(SCHEDULE))
    assert {r.webhook_id for r in tries} == {failed["event_id"]}
    assert len({r.body for r in tries}) == 1  # the same bytes each time
    assert all(r.verified for r in tries)
    for waited, scheduled in zip(gaps([r.at for r in tries]), SCHEDULE, strict=True):
        assert waited >= scheduled * (1 - JITTER) - 0.05, (waited, scheduled)

    # Retried by hand once the receiver is back: one more attempt, the same id again.
    retried = await client.post(
        org.path(f"/webhooks/{endpoint['id']}/deliveries/{failed['id']}/retry"), headers=org.owner.headers
    )
    (succeeded,) = await deliveries_once(client, org, endpoint, lambda found: found[0]["status"] == "succeeded")

    assert retried.status_code == 202, retried.text
    assert [a["response_status"] for a in succeeded["attempts"]] == [500, 500, 500, 200]
    assert [r.webhook_id for r in receiver.at("/down")] == [failed["event_id"]] * 4
    assert receiver.at("/down")[-1].verified is True


async def test_a_receiver_asking_to_wait_with_retry_after_is_not_called_sooner(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """429 Too Many Requests and 503 Service Unavailable, each with a Retry-After longer than the schedule's delay."""
    org = await create_org(client)
    later = {"Retry-After": str(RETRY_AFTER)}
    endpoints = {
        path: await add_endpoint(client, org, receiver.route(path, in_turn(answer(status, headers=later), answer(200))))
        for path, status in (("/busy", 429), ("/unavailable", 503))
    }

    await create_team(client, org)
    for (path, endpoint), status in zip(endpoints.items(), (429, 503), strict=True):
        (delivery,) = await deliveries_once(client, org, endpoint, settled)
        first, second = receiver.at(path)

        assert delivery["status"] == "succeeded"
        assert [a["response_status"] for a in delivery["attempts"]] == [status, 200]
        assert second.at - first.at >= RETRY_AFTER - 0.05, f"{status}: the schedule overrode the Retry-After"
        assert first.webhook_id == second.webhook_id == delivery["event_id"]


async def test_a_redirect_is_not_followed(client: httpx.AsyncClient, receiver: Receiver) -> None:
    org = await create_org(client)
    receiver.route("/elsewhere", answer(200))
    endpoint = await add_endpoint(client, org, receiver.route("/moved", redirect(receiver.url("/elsewhere"))))

    await create_team(client, org)
    (delivery,) = await deliveries_once(client, org, endpoint, attempted(1))

    attempt = delivery["attempts"][0]
    assert attempt["response_status"] == 302
    assert attempt["error"], "a redirect is a failed attempt, and says so"
    assert delivery["status"] != "succeeded"
    assert len(receiver.at("/moved")) >= 1
    assert receiver.at("/elsewhere") == []


async def test_a_huge_answer_is_read_no_further_than_64_kib(client: httpx.AsyncClient, receiver: Receiver) -> None:
    org = await create_org(client)
    stream = Stream(total=HUGE)
    endpoint = await add_endpoint(client, org, receiver.route("/huge", stream))

    await create_team(client, org)
    (delivery,) = await deliveries_once(client, org, endpoint, settled)
    await receiver.wait_for(lambda: stream.broken or stream.finished, within=30, what="the stream to end")

    assert delivery["status"] == "succeeded"  # a 2xx in time; what follows it is not the sender's business
    (attempt,) = delivery["attempts"]
    assert attempt["response_status"] == 200
    assert isinstance(attempt["duration_ms"], int)
    # The sender hung up long before the end: the receiver could only write what the sockets' buffers hold.
    assert stream.broken
    assert not stream.finished
    assert READ_LIMIT <= stream.sent < HUGE / 4, stream


async def test_receivers_that_do_not_answer_in_time_are_given_up_on_and_retried(
    client: httpx.AsyncClient, receiver: Receiver, silent_server: SilentServer
) -> None:
    """One accepts the connection and never says a word nor closes it; one answers 200, but only after 30 s;
    one answers 200 at once, then sends its body a byte at a time, for ever."""
    org = await create_org(client)
    silent = await add_endpoint(client, org, silent_server.url("/hooks"))
    slow = await add_endpoint(client, org, receiver.route("/slow", answer(200, delay=30)))
    trickling = await add_endpoint(client, org, receiver.route("/trickle", trickle))

    started = time.monotonic()
    await create_team(client, org)
    (from_silent,) = await deliveries_once(client, org, silent, attempted(1))
    (from_slow,) = await deliveries_once(client, org, slow, attempted(1))
    (from_trickle,) = await deliveries_once(client, org, trickling, attempted(1))

    assert time.monotonic() - started < 30  # none was waited for
    for delivery in (from_silent, from_slow, from_trickle):
        attempt = delivery["attempts"][0]
        if delivery is not from_trickle:  # whether a status line that came in time is logged is the sender's choice
            assert attempt["response_status"] is None
        assert attempt["error"], attempt
        assert attempt["duration_ms"] >= TIMEOUT * 1000 * 0.9, attempt
        assert delivery["status"] != "succeeded"
        if delivery["status"] == "pending":  # to be retried (unless the retries ran out meanwhile)
            assert delivery["next_attempt_at"] is not None
    assert receiver.at("/slow")
    assert receiver.at("/trickle")
    assert silent_server.connections
    assert f"webhook-id: {from_silent['event_id']}".encode() in silent_server.connections[0].data.lower()


async def test_a_receiver_answering_410_disables_its_endpoint(client: httpx.AsyncClient, receiver: Receiver) -> None:
    org = await create_org(client)
    gone = await add_endpoint(client, org, receiver.route("/gone", answer(410)))
    alive = await add_endpoint(client, org, receiver.route("/alive", answer(200)))

    await create_team(client, org)
    (delivery,) = await deliveries_once(client, org, gone, settled)
    shown = await client.get(org.path(f"/webhooks/{gone['id']}"), headers=org.owner.headers)
    await create_team(client, org)  # after it was disabled: not for the gone endpoint
    await deliveries_once(
        client, org, alive, lambda found: len(found) == 2 and all(d["status"] != "pending" for d in found)
    )

    assert (delivery["status"], [a["response_status"] for a in delivery["attempts"]]) == ("failed", [410])
    assert shown.status_code == 200
    assert shown.json()["enabled"] is False
    assert len(receiver.at("/gone")) == 1
    assert len(await deliveries(client, org, gone)) == 1
    assert len(receiver.at("/alive")) == 2


async def test_during_a_secret_rotation_both_secrets_verify(client: httpx.AsyncClient, receiver: Receiver) -> None:
    org = await create_org(client)
    endpoint = await add_endpoint(client, org, receiver.route("/rotating", answer(200)))
    old = endpoint["secret"]

    await create_team(client, org)
    await receiver.wait_for(lambda: len(receiver.at("/rotating")) == 1, what="the first delivery")
    rotated = await client.post(org.path(f"/webhooks/{endpoint['id']}/rotate-secret"), headers=org.owner.headers)
    new = (await client.get(org.path(f"/webhooks/{endpoint['id']}/secret"), headers=org.owner.headers)).json()["secret"]
    await create_team(client, org)
    await receiver.wait_for(lambda: len(receiver.at("/rotating")) == 2, what="the delivery after the rotation")
    before, after = receiver.at("/rotating")

    assert rotated.status_code in (200, 201), rotated.text
    assert new.startswith("whsec_")
    assert new != old
    assert before.verifies(old)
    assert not before.verifies(new)
    assert after.verifies(new), "the new secret does not verify"
    assert after.verifies(old), "the old secret no longer verifies during the rotation"
    assert len(after.headers["webhook-signature"].split(" ")) == 2
