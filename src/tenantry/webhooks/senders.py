"""The deliveries a process holds, queued per endpoint, and the long-lived tasks that send them within the caps.

At most ``per_endpoint`` requests are in flight to one endpoint, and ``concurrency`` in all: a slow
receiver fills its own slots, never the others'. Senders live as long as there is work: one that
finishes a request takes the next delivery that may start, and waits to be handed one when none
may. A task made and finished for every request cost about 14 µs of CPU a request in a
microbenchmark against the bench's receiver, some 7 % of a whole delivery.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator

import structlog

from tenantry.webhooks.work import Job

log = structlog.get_logger(__name__)


class Senders:
    """Holds leased deliveries and sends each once a slot of its endpoint is free.

    ``deliver`` sends one (and records what came of it); ``hand_back`` gives up one that was held
    so long that its request could outlast its lease; ``released`` hears of each slot freed.
    """

    def __init__(
        self,
        *,
        concurrency: int,
        per_endpoint: int,
        timeout: float,
        deliver: Callable[[Job], Awaitable[None]],
        hand_back: Callable[[Job], None],
        released: Callable[[uuid.UUID], None],
    ) -> None:
        self.concurrency = concurrency
        self.per_endpoint = per_endpoint
        self.timeout = timeout
        self._deliver = deliver
        self._hand_back = hand_back
        self._released = released
        self._queued: dict[uuid.UUID, deque[Job]] = {}  # endpoint -> held, waiting for one of its slots
        self.queued = 0
        self._busy: dict[uuid.UUID, int] = {}  # endpoint -> requests in flight
        self.in_flight = 0  # deliveries started and not yet done (each with a sender)
        self._done = asyncio.Event()  # set as each one is done
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: list[asyncio.Future[Job | None]] = []  # senders waiting to be handed a delivery

    def held(self, endpoint_id: uuid.UUID) -> int:
        """How many of ``endpoint_id``'s deliveries are held here, in flight or queued."""
        queue = self._queued.get(endpoint_id)
        return self._busy.get(endpoint_id, 0) + (len(queue) if queue else 0)

    def queued_for(self, endpoint_id: uuid.UUID) -> int:
        """How many of ``endpoint_id``'s deliveries wait here for a slot."""
        queue = self._queued.get(endpoint_id)
        return len(queue) if queue else 0

    def endpoints(self) -> set[uuid.UUID]:
        """The endpoints with deliveries held here."""
        return set(self._busy) | set(self._queued)

    def hold(self, jobs: Iterable[Job]) -> None:
        """Queue ``jobs`` (leased to this process) and start those whose endpoint has a free slot."""
        for job in jobs:
            self._queued.setdefault(job[1].id, deque()).append(job)
            self.queued += 1
        while (ready := self._next()) is not None:
            if self._idle:
                self._idle.pop().set_result(ready)
            else:
                sender = asyncio.create_task(self._send(ready), name="webhooks.send")
                self._tasks.add(sender)
                sender.add_done_callback(self._tasks.discard)

    def unstarted(self) -> Iterator[Job]:
        """Take out every queued delivery (a stop hands them back)."""
        queued, self._queued, self.queued = self._queued, {}, 0
        for queue in queued.values():
            yield from queue

    async def until_done(self) -> None:
        """Wait till one delivery in flight is done."""
        self._done.clear()
        await self._done.wait()

    async def dismiss(self) -> None:
        """End the senders: the idle ones now, any still sending (a stop cut short) by cancelling them."""
        for waiter in self._idle:
            waiter.set_result(None)
        self._idle.clear()
        senders = list(self._tasks)
        for sender in senders:
            if not sender.done():
                sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)

    def _next(self) -> Job | None:
        """The next queued delivery whose endpoint has a free slot, counted as started; None if none may start now.

        A request must end (it times out at the latest) while its lease holds, or another process could
        claim and send it at the same time: one held too long is handed back instead."""
        if self.in_flight >= self.concurrency or not self._queued:
            return None
        per_endpoint, latest = self.per_endpoint, time.monotonic() + self.timeout + 2.0
        found, emptied = None, []
        for endpoint_id, queue in self._queued.items():
            if self._busy.get(endpoint_id, 0) >= per_endpoint:
                continue
            found = self._first_startable(queue, latest)
            if not queue:
                emptied.append(endpoint_id)
            if found is not None:
                self._busy[endpoint_id] = self._busy.get(endpoint_id, 0) + 1
                self.in_flight += 1
                break
        for endpoint_id in emptied:
            del self._queued[endpoint_id]
        return found

    async def _send(self, job: Job | None) -> None:
        """A sender: delivers one held delivery after another while any may start, then waits to be handed one."""
        while job is not None:
            endpoint_id = job[1].id
            try:
                await self._deliver(job)
            except Exception as exc:  # the delivery's lease runs out, and it is sent again
                log.error("webhooks.delivery_crashed", error=repr(exc))
            except BaseException:  # cancelled (a stop cut short): its slot is freed, nothing more is taken
                self._release(endpoint_id)
                raise
            job = self._follow(endpoint_id) or self._next()
            if job is None:
                waiter: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
                self._idle.append(waiter)
                job = await waiter

    def _follow(self, endpoint_id: uuid.UUID) -> Job | None:
        """A request to ``endpoint_id`` is done: its slot goes to the endpoint's next queued delivery, when that is
        where ``_next`` would give it, without giving the slot up and taking it again (the usual case: a backlog).

        Below the overall cap, every delivery queued is queued for want of a slot of its own endpoint (one with a
        free slot would have started): the slot freed can only go to this endpoint's next. At the cap, it is
        released, and ``_next`` chooses among every endpoint."""
        queue = self._queued.get(endpoint_id)
        if queue is None or self.in_flight >= self.concurrency or self._busy[endpoint_id] > self.per_endpoint:
            self._release(endpoint_id)  # (over its cap: the cap was lowered meanwhile)
            return None
        job = self._first_startable(queue, time.monotonic() + self.timeout + 2.0)
        if not queue:
            del self._queued[endpoint_id]
        if job is None:
            self._release(endpoint_id)
            return None
        self._done.set()
        self._released(endpoint_id)
        return job

    def _first_startable(self, queue: deque[Job], latest: float) -> Job | None:
        """Take out ``queue``'s first delivery whose lease outlasts ``latest``; those before it, held so long that
        their request could outlast their lease, are handed back."""
        while queue:
            job = queue.popleft()
            self.queued -= 1
            if job[0].lease_ends >= latest:
                return job
            self._hand_back(job)
        return None

    def _release(self, endpoint_id: uuid.UUID) -> None:
        self.in_flight -= 1
        self._done.set()
        left = self._busy[endpoint_id] - 1
        if left:
            self._busy[endpoint_id] = left
        else:
            del self._busy[endpoint_id]
        self._released(endpoint_id)
