"""One request's time limit, kept by the deliverer's shared timer (``Deadlines``) instead of a timer per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tenantry.webhooks.sending import Deadlines, Outcome, Request, send
from tenantry.webhooks.signing import Signer, new_secret, secret_key
from tests.webhooks.receiver import Receiver, SilentServer, answer

LIMIT = 0.3


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as made:
        yield made


def _request(url: str) -> Request:
    return Request(url, "msg_1", b'{"type":"webhook.test"}', Signer([secret_key(new_secret())]), {})


async def _send(session: aiohttp.ClientSession, url: str, deadlines: Deadlines) -> tuple[Outcome, int]:
    """Send in a task of its own, as a sender does; the outcome, and the task's pending cancellations after it."""

    async def sending() -> tuple[Outcome, int]:
        outcome = await send(session, _request(url), deadlines=deadlines, body_limit=1024)
        task = asyncio.current_task()
        assert task is not None
        return outcome, task.cancelling()

    return await asyncio.create_task(sending())


async def test_a_request_past_its_limit_fails_as_a_timeout_and_leaves_its_task_uncancelled(
    session: aiohttp.ClientSession, silent_server: SilentServer
) -> None:
    deadlines = Deadlines(LIMIT, tick=0.05)
    started = time.monotonic()
    outcome, cancelling = await _send(session, silent_server.url("/hooks"), deadlines)
    elapsed = time.monotonic() - started

    assert outcome.error == f"No answer within {LIMIT:g} s."
    assert outcome.status is None
    assert not outcome.succeeded
    assert LIMIT <= elapsed < LIMIT + 2.0  # ended by the shared timer, a tick or so past the limit
    assert cancelling == 0  # the timer's cancellation was taken back: the sender goes on with its next request
    assert len(deadlines) == 0
    assert silent_server.connections  # it was sent, and waited for


async def test_requests_within_their_limit_are_not_ended_and_leave_nothing_behind(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    deadlines = Deadlines(LIMIT, tick=0.05)
    url = receiver.route("/hooks", answer(204))
    results = await asyncio.gather(*(_send(session, url, deadlines) for _ in range(20)))

    assert [(outcome.status, outcome.error, cancelling) for outcome, cancelling in results] == [(204, None, 0)] * 20
    assert len(deadlines) == 0
    await asyncio.sleep(LIMIT + 0.2)  # the timer comes and finds nothing to end
    assert len(deadlines) == 0


async def test_a_slow_request_is_ended_while_those_started_after_it_finish(
    session: aiohttp.ClientSession, silent_server: SilentServer, receiver: Receiver
) -> None:
    deadlines = Deadlines(LIMIT, tick=0.05)
    slow = asyncio.create_task(_send(session, silent_server.url("/hooks"), deadlines))
    await asyncio.sleep(0.05)
    quick = await _send(session, receiver.route("/hooks", answer(200)), deadlines)

    assert quick[0].status == 200
    assert len(deadlines) == 2  # the quick one, finished, is dropped once the slow one before it ends
    timed_out, _ = await slow
    assert timed_out.error == f"No answer within {LIMIT:g} s."
    assert len(deadlines) == 0


async def test_a_shutdown_during_a_request_is_not_mistaken_for_its_timeout(
    session: aiohttp.ClientSession, silent_server: SilentServer
) -> None:
    deadlines = Deadlines(LIMIT, tick=0.05)
    sending = asyncio.create_task(_send(session, silent_server.url("/hooks"), deadlines))
    await asyncio.sleep(0.1)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert len(deadlines) == 0


class _ShutdownAsTheDeadlineStrikes(Deadlines):
    """A shutdown cancels the sender just as its request is being ended for its deadline."""

    def finish(self, bound: Any) -> bool:
        if bound.expired:
            bound.task.cancel()
        return super().finish(bound)


async def test_a_shutdown_as_the_deadline_strikes_still_goes_through(
    session: aiohttp.ClientSession, silent_server: SilentServer
) -> None:
    """Both cancel the same task: the deadline's cancellation is taken back, the shutdown's stands, and send()
    itself lets it through rather than answering with a timed-out attempt."""
    deadlines = _ShutdownAsTheDeadlineStrikes(LIMIT, tick=0.05)
    what_send_did: list[str] = []

    async def sending() -> None:
        try:
            await send(session, _request(silent_server.url("/hooks")), deadlines=deadlines, body_limit=1024)
        except asyncio.CancelledError:
            what_send_did.append("raised")
            raise
        what_send_did.append("returned")

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(sending())
    assert what_send_did == ["raised"]
    assert len(deadlines) == 0
