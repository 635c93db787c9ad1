"""The senders of one process: the caps per endpoint and overall, a finished request's slot passed on, deliveries
held too long handed back. No network: each "request" waits until the test lets it finish."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

from tenantry.core.clock import utcnow
from tenantry.webhooks.senders import Senders
from tenantry.webhooks.signing import Signer
from tenantry.webhooks.work import Claimed, Job, Target


class Recorder:
    """Plays ``deliver``: each delivery starts, then waits to be finished by the test."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.handed_back: list[str] = []
        self.released: list[uuid.UUID] = []
        self.in_flight: dict[uuid.UUID, int] = {}
        self.most_in_flight: dict[uuid.UUID | None, int] = {}
        self._gates: dict[str, asyncio.Event] = {}

    async def deliver(self, job: Job) -> None:
        name, endpoint = _name(job), job[1].id
        self.started.append(name)
        self.in_flight[endpoint] = self.in_flight.get(endpoint, 0) + 1
        for key, count in ((endpoint, self.in_flight[endpoint]), (None, sum(self.in_flight.values()))):
            self.most_in_flight[key] = max(self.most_in_flight.get(key, 0), count)
        gate = self._gates.setdefault(name, asyncio.Event())
        await gate.wait()
        self.in_flight[endpoint] -= 1
        self.finished.append(name)

    async def finish(self, *names: str) -> None:
        """Let each named request finish in turn, and what that starts start."""
        for name in names:
            self._gates.setdefault(name, asyncio.Event()).set()
            await _settle()

    def senders(self, *, concurrency: int, per_endpoint: int) -> Senders:
        return Senders(
            concurrency=concurrency,
            per_endpoint=per_endpoint,
            timeout=5.0,
            deliver=self.deliver,
            hand_back=lambda job: self.handed_back.append(_name(job)),
            released=self.released.append,
        )


NAMES: dict[uuid.UUID, str] = {}


def _name(job: Job) -> str:
    return NAMES[job[0].id]


def _endpoint() -> Target:
    return Target(uuid.uuid4(), uuid.uuid4(), "http://127.0.0.1:9/", {}, Signer(()), None, None)


def _jobs(target: Target, prefix: str, count: int, *, lease: float = 60.0) -> Iterator[Job]:
    for number in range(1, count + 1):
        delivery = Claimed(
            uuid.uuid4(), target.org_id, target.id, uuid.uuid4(), b"{}", 0, False, utcnow(), time.monotonic() + lease
        )
        NAMES[delivery.id] = f"{prefix}{number}"
        yield delivery, target


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_backlog_keeps_its_endpoints_slots_busy_and_never_past_the_caps() -> None:
    recorder = Recorder()
    senders = recorder.senders(concurrency=3, per_endpoint=2)
    a, b = _endpoint(), _endpoint()
    senders.hold([*_jobs(a, "a", 5), *_jobs(b, "b", 3)])
    await _settle()
    assert recorder.started == ["a1", "a2", "b1"]
    await recorder.finish("a1", "b1", "a2", "a3", "b2", "a4", "a5", "b3")
    assert sorted(recorder.finished) == ["a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3"]
    assert sorted(recorder.started) == sorted(recorder.finished)  # each exactly once
    assert recorder.most_in_flight[a.id] == 2
    assert recorder.most_in_flight[b.id] <= 2
    assert recorder.most_in_flight[None] == 3
    assert len(recorder.released) == 8  # every finished request heard of, whether its slot was passed on or not
    assert (senders.in_flight, senders.queued, senders.held(a.id), senders.held(b.id)) == (0, 0, 0, 0)
    await senders.dismiss()


async def test_below_the_overall_cap_a_finished_request_hands_its_slot_to_its_endpoints_next() -> None:
    recorder = Recorder()
    senders = recorder.senders(concurrency=10, per_endpoint=1)
    a, b = _endpoint(), _endpoint()
    senders.hold([*_jobs(a, "a", 3), *_jobs(b, "b", 2)])
    await _settle()
    assert recorder.started == ["a1", "b1"]
    assert (senders.in_flight, senders.queued, senders.held(a.id)) == (2, 3, 3)
    await recorder.finish("a1")
    assert recorder.started == ["a1", "b1", "a2"]
    assert (senders.in_flight, senders.queued, senders.held(a.id), senders.queued_for(a.id)) == (2, 2, 2, 1)
    await recorder.finish("b1", "a2", "b2", "a3")
    assert recorder.finished == ["a1", "b1", "a2", "b2", "a3"]
    assert recorder.released == [a.id, b.id, a.id, b.id, a.id]  # the deliverer hears of each, passed on or not
    assert recorder.most_in_flight[a.id] == 1
    assert (senders.in_flight, senders.queued, senders.endpoints()) == (0, 0, set())
    await senders.dismiss()


async def test_a_lowered_cap_holds_back_the_endpoints_next_until_it_is_under_it() -> None:
    recorder = Recorder()
    senders = recorder.senders(concurrency=10, per_endpoint=2)
    a = _endpoint()
    senders.hold(list(_jobs(a, "a", 3)))
    await _settle()
    senders.per_endpoint = 1  # (tests and operators may lower it while requests are in flight)
    await recorder.finish("a1")
    assert recorder.started == ["a1", "a2"]  # a3 waits: a2 alone is the endpoint's cap now
    await recorder.finish("a2")
    assert recorder.started == ["a1", "a2", "a3"]
    await recorder.finish("a3")
    assert senders.in_flight == 0
    await senders.dismiss()


async def test_a_delivery_held_until_its_request_could_outlast_its_lease_is_handed_back_unsent() -> None:
    recorder = Recorder()
    senders = recorder.senders(concurrency=10, per_endpoint=1)
    a = _endpoint()
    # The second's lease ends in 6 s: the first's request (5 s at most) plus the margin leaves it no time.
    senders.hold([*_jobs(a, "a", 1), *_jobs(a, "short", 1, lease=6.0), *_jobs(a, "late", 1)])
    await _settle()
    await recorder.finish("a1")
    assert recorder.handed_back == ["short1"]
    assert recorder.started == ["a1", "late1"]
    await recorder.finish("late1")
    assert (senders.in_flight, senders.queued) == (0, 0)
    await senders.dismiss()


async def test_a_stop_cut_short_frees_the_slots_of_cancelled_requests_and_leaves_the_queue_to_be_handed_back() -> None:
    recorder = Recorder()
    senders = recorder.senders(concurrency=10, per_endpoint=1)
    a = _endpoint()
    senders.hold(list(_jobs(a, "a", 3)))
    await _settle()
    await senders.dismiss()  # cancels a1's request mid-flight
    assert recorder.started == ["a1"]
    assert senders.in_flight == 0
    assert sorted(_name(job) for job in senders.unstarted()) == ["a2", "a3"]
