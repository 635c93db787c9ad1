"""Delivery inside one process: fan-out by event type, the log, retries, replay, disabling, and fairness.

Real receivers on loopback (``tests.webhooks.receiver``), the platform's own background worker, both
databases. Misbehaving receivers and killed processes have tests of their own (test_receivers.py,
test_reliability.py).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy import select, update
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from tenantry.core.clock import utcnow
from tenantry.db import migrate, scope
from tenantry.events.models import OutboxEvent
from tenantry.identity.sealing import Sealer
from tenantry.platform import Platform
from tenantry.ratelimit.gcra import Rate
from tenantry.settings import Settings
from tenantry.webhooks import fanout
from tenantry.webhooks.delivery import _LEASE_BY_ID, Deliverer, Lags, _claimable, _due
from tenantry.webhooks.models import Attempt, Delivery, Endpoint
from tenantry.webhooks.sending import Outcome
from tenantry.webhooks.signing import Signer
from tenantry.webhooks.work import Claimed, Result, Target
from tests.factories.tenancy import Org, create_org, create_team
from tests.statements import WRITER, recorded
from tests.webhooks.receiver import Receiver, answer, in_turn

TESTS = ["webhook.test"]  # an endpoint that hears only the test events sent to it (not other endpoints' changes)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Receivers here listen on loopback; retries come after a second, attempts time out after two."""
    return settings.model_copy(
        update={
            "webhook_allow_private": True,
            "webhook_retry_schedule": "0.5,0.5",
            "webhook_timeout_seconds": 2.0,
        }
    )


async def add_endpoint(client: httpx.AsyncClient, org: Org, url: str, **body: object) -> dict[str, Any]:
    response = await client.post(org.path("/webhooks"), json={"url": url, **body}, headers=org.owner.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def deliveries(client: httpx.AsyncClient, org: Org, endpoint: dict[str, Any], **params: str) -> list[Any]:
    response = await client.get(
        org.path(f"/webhooks/{endpoint['id']}/deliveries"), params=params, headers=org.owner.headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def deliveries_when(
    client: httpx.AsyncClient, org: Org, endpoint: dict[str, Any], ready: Callable[[list[Any]], bool], what: str
) -> list[Any]:
    """The endpoint's deliveries once ``ready`` holds for them (fails after 30 s, saying ``what`` was awaited)."""
    for _ in range(600):
        found = await deliveries(client, org, endpoint)
        if ready(found):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: {found}")


async def settled(client: httpx.AsyncClient, org: Org, endpoint: dict[str, Any], count: int) -> list[Any]:
    """The endpoint's deliveries once ``count`` of them are no longer pending."""
    return await deliveries_when(
        client,
        org,
        endpoint,
        lambda found: len([d for d in found if d["status"] != "pending"]) >= count,
        "deliveries did not settle",
    )


async def test_events_reach_the_endpoints_that_asked_for_them_signed_and_logged(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    org = await create_org(client)
    every = await add_endpoint(client, org, receiver.url("/every"))
    teams = await add_endpoint(client, org, receiver.url("/teams"), event_types=["team.created"])
    receiver.trust("/every", every["secret"])
    receiver.trust("/teams", teams["secret"])

    await create_team(client, org, name="Platform")
    await receiver.wait_for(lambda: len(receiver.at("/teams")) == 1, what="the team event")

    request = receiver.at("/teams")[0]
    assert request.verifies(teams["secret"])
    body = request.json()
    assert body["type"] == "team.created"
    assert body["data"]["team"]["name"] == "Platform"
    assert set(body) == {"type", "timestamp", "data"}
    await receiver.wait_for(lambda: "team.created" in [r.json()["type"] for r in receiver.at("/every")])
    assert all(r.verifies(every["secret"]) for r in receiver.at("/every"))
    logged = await settled(client, org, teams, 1)
    assert [(d["event_type"], d["status"], d["event_id"]) for d in logged] == [
        ("team.created", "succeeded", request.webhook_id)
    ]
    (attempt,) = logged[0]["attempts"]
    assert attempt["response_status"] == 200
    assert attempt["error"] is None
    assert attempt["duration_ms"] >= 0
    assert logged[0]["next_attempt_at"] is None


async def test_another_organizations_events_never_reach_an_endpoint(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    mine, theirs = await create_org(client), await create_org(client)
    await add_endpoint(client, mine, receiver.url("/mine"))

    await create_team(client, theirs, name="Not yours")
    await platform.drain()
    await create_team(client, mine, name="Yours")
    await receiver.wait_for(lambda: any(r.json()["type"] == "team.created" for r in receiver.at("/mine")))

    assert "Not yours" not in str([r.body for r in receiver.requests])


async def test_a_test_event_goes_to_its_endpoint_only(client: httpx.AsyncClient, receiver: Receiver) -> None:
    org = await create_org(client)
    target = await add_endpoint(client, org, receiver.url("/target"), event_types=TESTS)
    await add_endpoint(client, org, receiver.url("/bystander"))

    sent = await client.post(org.path(f"/webhooks/{target['id']}/test"), headers=org.owner.headers)
    await receiver.wait_for(lambda: len(receiver.at("/target")) == 1)
    await asyncio.sleep(0.3)

    assert receiver.at("/target")[0].json()["type"] == "webhook.test"
    assert receiver.at("/target")[0].webhook_id == sent.json()["event_id"]
    assert "webhook.test" not in [r.json()["type"] for r in receiver.at("/bystander")]


async def test_a_second_fan_out_of_the_same_event_makes_no_second_delivery(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    """The dispatcher hands events over at least once; deliveries must still be made once."""
    org = await create_org(client)
    endpoint = await add_endpoint(client, org, receiver.url("/once"), event_types=["team.created"])
    await create_team(client, org)
    await platform.drain()
    async with platform.db.transaction() as tx:
        await scope.unscoped(tx)
        events = list((await tx.scalars(select(OutboxEvent).where(OutboxEvent.type == "team.created"))).all())
        await fanout.unscoped_fan_out(tx, events)  # as after a crash between the fan-out and the cursor save
    await platform.drain()

    assert len(await deliveries(client, org, endpoint)) == 1
    assert len(receiver.ids("/once")) == 1


async def test_failures_are_retried_on_schedule_with_the_same_id_then_marked_failed(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    org = await create_org(client)
    endpoint = await add_endpoint(client, org, receiver.route("/down", answer(500, body="bo\x00om")), event_types=TESTS)

    sent = await client.post(org.path(f"/webhooks/{endpoint['id']}/test"), headers=org.owner.headers)
    (delivery,) = await settled(client, org, endpoint, 1)

    assert delivery["status"] == "failed"
    assert [a["response_status"] for a in delivery["attempts"]] == [500, 500, 500]  # first try + two retries
    assert delivery["attempts"][0]["response_body"] == "bo\ufffdom"  # kept, minus what PostgreSQL cannot store
    assert {r.webhook_id for r in receiver.at("/down")} == {sent.json()["event_id"]}
    assert [d["id"] for d in await deliveries(client, org, endpoint, status="failed")] == [delivery["id"]]
    assert await deliveries(client, org, endpoint, status="succeeded") == []


async def test_a_manual_retry_makes_one_more_attempt(client: httpx.AsyncClient, receiver: Receiver) -> None:
    org = await create_org(client)
    url = receiver.route("/flaky", in_turn(answer(500), answer(500), answer(500), answer(204)))
    endpoint = await add_endpoint(client, org, url, event_types=TESTS)
    await client.post(org.path(f"/webhooks/{endpoint['id']}/test"), headers=org.owner.headers)
    (failed,) = await settled(client, org, endpoint, 1)
    assert failed["status"] == "failed"

    retried = await client.post(
        org.path(f"/webhooks/{endpoint['id']}/deliveries/{failed['id']}/retry"), headers=org.owner.headers
    )
    assert retried.status_code == 202
    await receiver.wait_for(lambda: len(receiver.at("/flaky")) == 4)
    (done,) = await settled(client, org, endpoint, 1)
    for _ in range(100):
        if done["status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
        (done,) = await deliveries(client, org, endpoint)

    assert done["status"] == "succeeded"
    assert [a["response_status"] for a in done["attempts"]] == [500, 500, 500, 204]


async def test_recover_sends_again_every_failed_delivery_since_a_time(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    org = await create_org(client)
    down = receiver.route("/recovering", in_turn(*[answer(503)] * 6, answer(200)))
    endpoint = await add_endpoint(client, org, down, event_types=TESTS)
    for _ in range(2):
        await client.post(org.path(f"/webhooks/{endpoint['id']}/test"), headers=org.owner.headers)
    failed = await settled(client, org, endpoint, 2)
    assert [d["status"] for d in failed] == ["failed", "failed"]

    since = (utcnow() - timedelta(minutes=5)).isoformat()
    recovering = await client.post(
        org.path(f"/webhooks/{endpoint['id']}/recover"), json={"since": since}, headers=org.owner.headers
    )
    assert recovering.status_code == 202
    assert recovering.json() == {"deliveries": 2}
    await receiver.wait_for(lambda: len([r for r in receiver.at("/recovering") if r.acknowledged]) == 2)
    for _ in range(100):
        if all(d["status"] == "succeeded" for d in await deliveries(client, org, endpoint)):
            break
        await asyncio.sleep(0.05)
    assert [d["status"] for d in await deliveries(client, org, endpoint)] == ["succeeded", "succeeded"]
    future = await client.post(
        org.path(f"/webhooks/{endpoint['id']}/recover"),
        json={"since": (utcnow() + timedelta(days=1)).isoformat()},
        headers=org.owner.headers,
    )
    naive = await client.post(
        org.path(f"/webhooks/{endpoint['id']}/recover"),
        json={"since": "2026-01-01T00:00:00"},
        headers=org.owner.headers,
    )
    assert future.status_code == 422
    assert naive.status_code == 422


async def test_an_endpoint_that_only_fails_for_long_enough_is_disabled_with_an_event(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    org = await create_org(client)
    watcher = await add_endpoint(client, org, receiver.url("/watcher"), event_types=["endpoint.disabled"])
    dying = await add_endpoint(client, org, receiver.route("/dying", answer(500)), event_types=TESTS)
    await client.post(org.path(f"/webhooks/{dying['id']}/test"), headers=org.owner.headers)
    await settled(client, org, dying, 1)
    async with platform.db.transaction() as tx:  # as if the failures had begun six days ago
        await scope.to_org(tx, uuid.UUID(org.id))
        await tx.execute(
            update(Endpoint)
            .where(Endpoint.id == uuid.UUID(dying["id"]))
            .values(failing_since=utcnow() - timedelta(days=6))
        )

    await client.post(org.path(f"/webhooks/{dying['id']}/test"), headers=org.owner.headers)
    await receiver.wait_for(lambda: len(receiver.at("/watcher")) == 1, what="the endpoint.disabled event")

    event = receiver.at("/watcher")[0].json()
    assert event["type"] == "endpoint.disabled"
    assert event["data"]["endpoint_id"] == dying["id"]
    assert event["data"]["reason"] == "failing"
    state = await client.get(org.path(f"/webhooks/{dying['id']}"), headers=org.owner.headers)
    assert state.json()["enabled"] is False
    assert state.json()["disabled_reason"] == "failing"
    assert watcher["id"] != dying["id"]


async def test_an_endpoint_that_answers_well_again_is_no_longer_failing(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    """So that five days of failures are counted from the last failure after a success, not from the first."""
    org = await create_org(client)
    flaky = await add_endpoint(
        client, org, receiver.route("/flaky", in_turn(answer(500), answer(204))), event_types=TESTS
    )

    async def failing_since() -> Any:
        async with platform.db.read() as session:
            await scope.to_org(session, uuid.UUID(org.id))
            return await session.scalar(select(Endpoint.failing_since).where(Endpoint.id == uuid.UUID(flaky["id"])))

    await client.post(org.path(f"/webhooks/{flaky['id']}/test"), headers=org.owner.headers)
    await deliveries_when(client, org, flaky, lambda found: found and found[0]["attempts"], "the first attempt")
    for _ in range(100):  # (the attempt is logged with its endpoint's state, in one transaction)
        if await failing_since() is not None:
            break
        await asyncio.sleep(0.05)
    assert await failing_since() is not None

    await settled(client, org, flaky, 1)  # the retry, half a second later, succeeds

    assert await failing_since() is None


async def test_a_disabled_endpoint_keeps_its_pending_retries_and_hears_nothing_new(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    """Disabling pauses: a pending retry waits for the endpoint to be enabled again; events that happen
    while it is disabled are not queued for it (as a deleted endpoint's would not be)."""
    org = await create_org(client)
    url = receiver.route("/paused", in_turn(answer(500), answer(200)))
    endpoint = await add_endpoint(client, org, url, event_types=["team.created"])
    path = org.path(f"/webhooks/{endpoint['id']}")
    await create_team(client, org, name="Before")
    await receiver.wait_for(lambda: len(receiver.at("/paused")) == 1)
    await client.patch(path, json={"enabled": False}, headers=org.owner.headers)  # its retry is pending

    await create_team(client, org, name="During")
    await platform.drain()
    await asyncio.sleep(1.5)  # three times the retry delay
    assert len(receiver.at("/paused")) == 1
    await client.patch(path, json={"enabled": True}, headers=org.owner.headers)
    await receiver.wait_for(lambda: len(receiver.at("/paused")) == 2, what="the paused retry")

    retried = receiver.at("/paused")[1]
    assert retried.webhook_id == receiver.at("/paused")[0].webhook_id
    assert retried.json()["data"]["team"]["name"] == "Before"
    await platform.drain()
    assert len(receiver.at("/paused")) == 2


async def test_a_slow_receiver_never_delays_the_others(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    """The slow endpoint fills its own slots (the per-endpoint cap), and the fast one is served meanwhile."""
    org = await create_org(client)
    hold = receiver.hold(200)
    slow = await add_endpoint(client, org, receiver.route("/slow", hold), event_types=TESTS)
    fast = await add_endpoint(client, org, receiver.url("/fast"), event_types=TESTS)
    cap = platform.settings.webhook_concurrency_per_endpoint
    for _ in range(cap + 5):
        await client.post(org.path(f"/webhooks/{slow['id']}/test"), headers=org.owner.headers)
    await receiver.wait_for(lambda: hold.waiting == cap, what="the slow endpoint's slots to fill")

    for _ in range(5):
        await client.post(org.path(f"/webhooks/{fast['id']}/test"), headers=org.owner.headers)
    await receiver.wait_for(lambda: len(receiver.at("/fast")) >= 5, within=10, what="the fast endpoint")

    assert hold.waiting == cap  # never more than the cap in flight to the slow one
    hold.release()
    await receiver.wait_for(lambda: len(receiver.ids("/slow")) == cap + 5, what="the rest")


def _limit_per_endpoint(deliverer: Deliverer, per_endpoint: int) -> None:
    """Shrink a running deliverer's per-endpoint cap (its senders hold a copy), and let it claim only when woken."""
    deliverer.config = dataclasses.replace(deliverer.config, per_endpoint=per_endpoint, poll_interval=3600.0)
    deliverer.senders.per_endpoint = per_endpoint


async def test_a_backlog_beyond_an_endpoints_room_goes_out_without_waiting_for_the_poll(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    """More deliveries than one endpoint may hold: the rest are left for claims, and a claim made while the
    endpoint is full finds none of them. They must still go as slots free up, not at the next poll."""
    deliverer = platform.deliverer
    _limit_per_endpoint(deliverer, 2)
    org = await create_org(client)
    endpoint = await add_endpoint(client, org, receiver.route("/hooks", answer(delay=0.05)), event_types=TESTS)

    for _ in range(12):
        await client.post(org.path(f"/webhooks/{endpoint['id']}/test"), headers=org.owner.headers)

    await receiver.wait_for(lambda: len(receiver.ids("/hooks")) == 12, within=30, what="the whole backlog")


async def test_an_endpoint_rate_limit_spreads_requests_out(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    org = await create_org(client)
    endpoint = await add_endpoint(client, org, receiver.url("/limited"), rate_limit=2, event_types=TESTS)
    for _ in range(6):
        await client.post(org.path(f"/webhooks/{endpoint['id']}/test"), headers=org.owner.headers)

    await receiver.wait_for(lambda: len(receiver.ids("/limited")) == 6, within=30)

    arrivals = sorted(r.at for r in receiver.at("/limited"))
    # A burst of 2, then 2 a second: the sixth cannot arrive before 2 s after the first (GCRA is exact).
    assert arrivals[-1] - arrivals[0] >= 1.9
    assert len(receiver.at("/limited")) == 6  # postponed, never dropped nor duplicated


async def test_an_endpoint_deleted_while_its_request_is_in_flight_holds_nothing_up(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    org = await create_org(client)
    hold = receiver.hold(200)
    doomed = await add_endpoint(client, org, receiver.route("/doomed", hold), event_types=TESTS)
    other = await add_endpoint(client, org, receiver.url("/other"), event_types=TESTS)
    await client.post(org.path(f"/webhooks/{doomed['id']}/test"), headers=org.owner.headers)
    await receiver.wait_for(lambda: hold.waiting == 1, what="the request in flight")

    deleted = await client.delete(org.path(f"/webhooks/{doomed['id']}"), headers=org.owner.headers)
    hold.release()
    await client.post(org.path(f"/webhooks/{other['id']}/test"), headers=org.owner.headers)

    assert deleted.status_code == 204
    await receiver.wait_for(lambda: len(receiver.at("/other")) == 1, what="the other endpoint's event")
    logged = await settled(client, org, other, 1)  # results are written: nothing is stuck behind the orphan
    assert logged[0]["status"] == "succeeded"


async def test_a_delivery_whose_rate_limited_turn_comes_too_late_for_its_lease_is_handed_back_unsent(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    """Waiting for an endpoint's rate limit must not carry a request past its lease: by then another process
    may have claimed the delivery and be sending it too."""
    org = await create_org(client)
    endpoint = await add_endpoint(client, org, receiver.url("/late"), rate_limit=2, event_types=TESTS)
    endpoint_id = uuid.UUID(endpoint["id"])
    deliverer = Deliverer(
        platform.db,
        sealer=platform.sealer,
        limiter=platform.limiter,
        config=platform.deliverer.config,
        node_id="rate-limited-test",
    )
    rate = Rate(limit=2, period=1.0, burst=2)
    for _ in range(2):  # the burst is spent: the next request may go in half a second
        assert (await platform.limiter.hit(f"webhooks:{endpoint_id}", rate, policy="webhooks.endpoint")).allowed
    org_id = uuid.UUID(org.id)
    target = Target(endpoint_id, org_id, receiver.url("/late"), {}, Signer((b"k" * 32,)), 2, None)
    # Lease enough to start, not enough to wait half a second and still end a request (timeout) within it.
    lease_ends = time.monotonic() + deliverer.config.timeout + 2.25
    delivery = Claimed(uuid.uuid4(), org_id, endpoint_id, uuid.uuid4(), b"{}", 0, False, utcnow(), lease_ends)
    try:
        deliverer.take([(delivery, target)])
        await deliverer.drain()
    finally:
        await deliverer.close()

    assert receiver.at("/late") == []


async def test_a_request_that_cannot_be_made_is_a_failed_attempt_not_a_delivery_pending_forever(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    """Whatever makes a request impossible (here a header value no client may send, in a row written before
    such values were refused) is logged as the attempt's error, and the delivery runs its schedule out."""
    org = await create_org(client)
    endpoint = await add_endpoint(client, org, receiver.url("/unsendable"), event_types=TESTS)
    async with platform.db.transaction() as tx:
        await scope.to_org(tx, uuid.UUID(org.id))
        await tx.execute(
            update(Endpoint).where(Endpoint.id == uuid.UUID(endpoint["id"])).values(headers={"X-Bell": "a\x07b"})
        )

    await client.post(org.path(f"/webhooks/{endpoint['id']}/test"), headers=org.owner.headers)
    (delivery,) = await settled(client, org, endpoint, 1)

    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == 3
    assert all("control character" in a["error"] for a in delivery["attempts"])
    assert receiver.at("/unsendable") == []


async def test_an_endpoint_whose_secret_cannot_be_opened_fails_its_own_attempts_and_blocks_no_one(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    """As after the encryption key was changed by mistake: that endpoint's attempts fail, logged, and
    every other endpoint is served."""
    org = await create_org(client)
    broken = await add_endpoint(client, org, receiver.url("/broken"), event_types=["team.created"])
    await add_endpoint(client, org, receiver.url("/healthy"), event_types=["team.created"])
    other_key = Sealer(secrets.token_bytes(32))
    async with platform.db.transaction() as tx:
        await scope.to_org(tx, uuid.UUID(org.id))
        sealed = other_key.seal(
            b"whsec_" + base64.b64encode(secrets.token_bytes(32)), owner=uuid.UUID(broken["id"]).bytes
        )
        await tx.execute(
            update(Endpoint).where(Endpoint.id == uuid.UUID(broken["id"])).values(secret=sealed, updated_at=utcnow())
        )

    await create_team(client, org, name="Still delivered")
    await receiver.wait_for(lambda: len(receiver.at("/healthy")) == 1, what="the healthy endpoint's event")
    (delivery,) = await deliveries_when(
        client, org, broken, lambda found: bool(found and found[0]["attempts"]), "no attempt was logged"
    )

    assert receiver.at("/broken") == []
    assert "signing secret cannot be opened" in delivery["attempts"][0]["error"]
    assert delivery["attempts"][0]["response_status"] is None


async def test_a_page_of_deliveries_shows_the_start_of_each_answer_and_one_delivery_all_that_was_kept(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    org = await create_org(client)
    endpoint = await add_endpoint(
        client, org, receiver.route("/chatty", answer(200, body="x" * 5000)), event_types=TESTS
    )
    await client.post(org.path(f"/webhooks/{endpoint['id']}/test"), headers=org.owner.headers)
    (listed,) = await settled(client, org, endpoint, 1)

    one = await client.get(org.path(f"/webhooks/{endpoint['id']}/deliveries/{listed['id']}"), headers=org.owner.headers)
    elsewhere = await client.get(
        org.path(f"/webhooks/{uuid.uuid4()}/deliveries/{listed['id']}"), headers=org.owner.headers
    )

    assert listed["attempts"][0]["response_body"] == "x" * 1024 + "…"
    assert one.status_code == 200
    assert one.json()["attempts"][0]["response_body"] == "x" * 5000
    assert one.json()["id"] == listed["id"]
    assert elsewhere.status_code == 404


def _leases_by_id(statement: str, _parameters: Any) -> bool:
    return statement.startswith("UPDATE webhooks_delivery") and "is_enabled" in statement


async def test_a_backlog_is_leased_by_id_and_what_another_process_took_meanwhile_is_not_sent_twice(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    """Deliveries the fan-out had no room for are written unleased and remembered; they are leased later by
    id, as slots free up. One that another process claimed in the meantime is left to it."""
    deliverer = platform.deliverer
    _limit_per_endpoint(deliverer, 1)
    org = await create_org(client)
    hold = receiver.hold(200)
    endpoint = await add_endpoint(client, org, receiver.route("/held", hold), event_types=TESTS)
    for _ in range(10):
        await client.post(org.path(f"/webhooks/{endpoint['id']}/test"), headers=org.owner.headers)
    await receiver.wait_for(lambda: hold.waiting == 1, what="the first request in flight")
    rows: list[Any] = []
    for _ in range(600):  # the fan-out may still be writing the last ones
        async with platform.db.read() as session:
            await scope.unscoped(session)
            query = select(Delivery.id, Delivery.event_id).where(Delivery.locked_by.is_(None))
            rows = list((await session.execute(query)).all())
        if len(rows) == 8:  # two are leased to this process: one in flight, one waiting for the slot
            break
        await asyncio.sleep(0.05)
    taken = rows[:3]
    async with platform.db.transaction() as tx:  # what another process's claim does
        await scope.unscoped(tx)
        until = utcnow() + timedelta(hours=1)
        taking = update(Delivery).where(Delivery.id.in_([r.id for r in taken]))
        await tx.execute(taking.values(locked_by="b", locked_until=until))

    with recorded(platform.db, [WRITER], _leases_by_id) as leases_by_id:
        hold.release()
        await receiver.wait_for(lambda: len(receiver.ids("/held")) == 7, what="all but the three taken")
        await asyncio.sleep(0.3)
    sent = receiver.ids("/held")
    assert len(sent) == 7
    assert not {str(r.event_id) for r in taken} & set(sent)
    assert leases_by_id, "the backlog was not leased by id"


async def test_results_settle_only_the_deliveries_this_process_still_holds(
    client: httpx.AsyncClient, receiver: Receiver, platform: Platform
) -> None:
    """Successes are settled together, in one statement per batch: one whose lease ran out and was taken by
    another process meanwhile must be left to that process (pending, its count untouched), the others settled
    with one more attempt each. Every attempt made is logged all the same."""
    org = await create_org(client)
    endpoint = await add_endpoint(client, org, receiver.url("/ok"), event_types=TESTS)  # hears nothing here
    deliverer, now = platform.deliverer, utcnow()
    async with platform.db.transaction() as tx:
        await scope.unscoped(tx)
        row = (await tx.execute(select(Endpoint).where(Endpoint.id == uuid.UUID(endpoint["id"])))).scalar_one()
        target = deliverer.targets.put(row, now)
        made = [
            Delivery(
                org_id=row.org_id, endpoint_id=row.id, event_id=uuid.uuid4(), event_type="team.created",
                payload="{}", attempt_count=count, next_attempt_at=now, created_at=now,
                locked_by=deliverer.node_id, locked_until=now + timedelta(minutes=1),
            )
            for count in (0, 2, 0)
        ]  # fmt: skip
        tx.add_all(made)
    ours, retried, taken = made
    async with platform.db.transaction() as tx:  # another process takes the third (its lease ran out, say)
        await scope.unscoped(tx)
        await tx.execute(update(Delivery).where(Delivery.id == taken.id).values(locked_by="another"))
    for delivery in made:
        claimed = Claimed(
            delivery.id, row.org_id, row.id, delivery.event_id, b"{}", delivery.attempt_count, False, now, 0.0
        )
        deliverer.ledger.record(Result(claimed, target, Outcome(utcnow(), 204, 3)))
    await deliverer.ledger.flush()

    async with platform.db.read() as session:
        await scope.unscoped(session)
        found = {d.id: d for d in (await session.scalars(select(Delivery).where(Delivery.endpoint_id == row.id)))}
        logged = (await session.scalars(select(Attempt.delivery_id).where(Attempt.org_id == row.org_id))).all()
    assert (found[ours.id].status, found[ours.id].attempt_count, found[ours.id].locked_by) == ("succeeded", 1, None)
    assert found[ours.id].finished_at is not None
    assert (found[retried.id].status, found[retried.id].attempt_count) == ("succeeded", 3)
    assert (found[taken.id].status, found[taken.id].attempt_count) == ("pending", 0)
    assert (found[taken.id].locked_by, found[taken.id].finished_at) == ("another", None)
    assert sorted(logged) == sorted(d.id for d in made)


def test_claims_find_due_deliveries_through_the_due_index_of_pending_ones(tmp_path: Path) -> None:
    """The due index holds pending deliveries only; a claim uses it only if it says ``status = 'pending'`` as the
    index does (a bound parameter would not match it, and every claim would scan the whole log)."""
    migrate.upgrade(f"sqlite+aiosqlite:///{tmp_path / 'plan.db'}")
    due = _due(utcnow(), full=[uuid.uuid4()])  # an endpoint full here: claims look past its deliveries
    for query in (_claimable(due, 200), select(Delivery.id).where(due).limit(1)):
        compiled = query.compile(
            dialect=sqlite_dialect(paramstyle="qmark"), compile_kwargs={"render_postcompile": True}
        )
        unbound = (None,) * len(compiled.positiontup or ())  # a plan does not depend on their values
        with sqlite3.connect(tmp_path / "plan.db") as connection:
            plan = " ".join(str(row[-1]) for row in connection.execute(f"EXPLAIN QUERY PLAN {compiled}", unbound))
        assert "USING INDEX ix_webhooks_delivery_due" in plan, plan


def test_a_lease_by_id_finds_each_delivery_by_its_key_whatever_the_backlog(tmp_path: Path) -> None:
    """A backlog's lease by id must look its deliveries up by their key: planned on the due index or on the
    endpoint's, it read every due delivery, or every enabled endpoint's row for every id, on each lease."""
    migrate.upgrade(f"sqlite+aiosqlite:///{tmp_path / 'plan.db'}")
    compiled = _LEASE_BY_ID._statements[256].compiled(sqlite_dialect(paramstyle="qmark"))
    with sqlite3.connect(tmp_path / "plan.db") as connection:
        unbound = (None,) * compiled.sql.count("?")
        steps = [str(row[-1]) for row in connection.execute(f"EXPLAIN QUERY PLAN {compiled.sql}", unbound)]
    assert steps[0] == "SEARCH webhooks_delivery USING INDEX sqlite_autoindex_webhooks_delivery_1 (id=?)", steps


async def test_every_attempt_is_counted_in_the_lag_histogram_and_scraped_as_prometheus_reads_one(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """``tenantry_webhook_lag_seconds`` is counted by hand (not prometheus_client's Histogram): its exposition must
    still be a histogram's, buckets cumulative up to ``+Inf``, which is the count."""
    name = "tenantry_webhook_lag_seconds"
    before = REGISTRY.get_sample_value(f"{name}_count") or 0.0
    org = await create_org(client)
    endpoint = await add_endpoint(client, org, receiver.url("/lag"), event_types=TESTS)
    for _ in range(3):
        await client.post(org.path(f"/webhooks/{endpoint['id']}/test"), headers=org.owner.headers)
    await settled(client, org, endpoint, 3)

    count = REGISTRY.get_sample_value(f"{name}_count")
    assert count == before + 3
    buckets = [REGISTRY.get_sample_value(f"{name}_bucket", {"le": le}) for le in ("0.005", "1.0", "300.0", "+Inf")]
    assert buckets == sorted(buckets)  # cumulative
    assert buckets[-1] == count
    assert (REGISTRY.get_sample_value(f"{name}_sum") or 0.0) >= 0.0
    text = generate_latest(REGISTRY).decode()
    assert f"# TYPE {name} histogram" in text
    assert f'{name}_bucket{{le="2.5"}}' in text


def test_the_lag_histogram_puts_each_lag_in_the_first_bucket_it_is_at_most() -> None:
    lags = Lags()
    for seconds in (0.0, 0.005, 0.0051, 1.0, 299.0, 301.0, 10_000.0):
        lags.observe(seconds)
    (family,) = lags.collect()
    cumulative = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert (cumulative["0.005"], cumulative["0.01"], cumulative["1.0"], cumulative["300.0"]) == (2, 3, 4, 5)
    assert cumulative["+Inf"] == 7
    assert next(s.value for s in family.samples if s.name.endswith("_sum")) == pytest.approx(10_601.0101)
