"""Stopping a delivering process: its requests in flight finish and are logged, whatever grace it is given."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tenantry.platform import Platform
from tenantry.settings import Settings
from tests.factories.tenancy import create_org
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_delivery import TESTS, add_endpoint, deliveries


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The application only answers the API; the test's own platform delivers."""
    return settings.model_copy(
        update={"webhook_allow_private": True, "webhook_timeout_seconds": 5.0, "embedded_worker": False}
    )


async def test_a_request_in_flight_outlasting_the_grace_still_finishes_and_is_logged(
    client: httpx.AsyncClient, receiver: Receiver, settings: Settings
) -> None:
    """The grace of a stop is shorter than a webhook's timeout by default (10 s against 15 s): a request
    answered after it must still be logged, or it would be sent again once its lease ran out."""
    org = await create_org(client)
    hold = receiver.hold(200)
    endpoint = await add_endpoint(client, org, receiver.route("/slow", hold), event_types=TESTS)
    delivering = Platform(settings.model_copy(update={"embedded_worker": True}))
    await delivering.start()
    stopped = False
    try:
        await client.post(org.path(f"/webhooks/{endpoint['id']}/test"), headers=org.owner.headers)
        await receiver.wait_for(lambda: hold.waiting == 1, what="the request in flight")

        stopping = asyncio.create_task(delivering.stop(grace=0.2))
        await asyncio.sleep(1.0)  # longer than the grace, well within the webhook timeout
        hold.release()
        await stopping
        stopped = True
    finally:
        if not stopped:
            hold.release()
            await delivering.stop()

    (delivery,) = await deliveries(client, org, endpoint)
    assert delivery["status"] == "succeeded"
    assert [a["response_status"] for a in delivery["attempts"]] == [200]
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "webhooks.send"]  # its senders ended
