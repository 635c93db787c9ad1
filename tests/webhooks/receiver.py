"""A webhook receiver on loopback, for tests: real HTTP servers that misbehave on purpose.

``Receiver`` is an aiohttp server on 127.0.0.1 with one behaviour per path (answer a status, answer
late, redirect, stream a huge body, hold the request until told). It records every request it gets
(path, headers, body, arrival time, what it answered) and checks each signature against the secrets
it was given for that path, with ``standardwebhooks``, the verifier a subscriber would use.
``SilentServer`` is a bare TCP server that accepts a connection, reads the request and never says a
word nor closes: what aiohttp cannot be made to do.

Both run in the test's own event loop, and only ever listen on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

LOOPBACK = "127.0.0.1"


@dataclass
class Received:
    """One request as it arrived, and how the receiver answered it."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic() on arrival
    verified: bool | None = None  # against the path's secrets; None: none were given
    status: int | None = None  # what the receiver answered; None: not yet, or the sender had gone by then
    held: bool = False  # kept waiting by a Hold
    peer_port: int = 0  # the sender's port: whose socket it is can be looked up while the connection lasts

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)

    def verifies(self, secret: str) -> bool:
        """Whether ``secret`` verifies the request's signature, as a Standard Webhooks subscriber checks it."""
        try:
            Webhook(secret).verify(self.body, self.headers)
        except WebhookVerificationError:
            return False
        return True


# What a path does with a request (already recorded): the response to send.
Reply = Callable[[web.Request, Received], Awaitable[web.StreamResponse]]


def answer(status: int = 200, *, headers: dict[str, str] | None = None, body: str = "", delay: float = 0.0) -> Reply:
    """Answer ``status`` (after ``delay`` seconds)."""

    async def reply(_request: web.Request, _received: Received) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, headers=headers, text=body)

    return reply


def in_turn(*replies: Reply) -> Reply:
    """The n-th request to the path gets the n-th reply; the last one answers every request after."""
    count = 0

    async def reply(request: web.Request, received: Received) -> web.StreamResponse:
        nonlocal count
        chosen = replies[min(count, len(replies) - 1)]
        count += 1
        return await chosen(request, received)

    return reply


def redirect(location: str, status: int = 302) -> Reply:
    return answer(status, headers={"Location": location})


@dataclass
class Stream:
    """A 200 whose body is ``total`` bytes, written in chunks for as long as the client reads them."""

    total: int
    chunk: int = 64 * 1024
    sent: int = 0  # bytes handed to the socket so far
    finished: bool = False  # every byte was written
    broken: bool = False  # the client went away before the end

    async def __call__(self, request: web.Request, _received: Received) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/octet-stream"})
        response.content_length = self.total
        await response.prepare(request)
        block = b"x" * self.chunk
        try:
            while self.sent < self.total:
                part = block[: self.total - self.sent]
                await response.write(part)
                self.sent += len(part)
            await response.write_eof()
            self.finished = True
        except (ConnectionError, RuntimeError):  # the client closed the connection under us
            self.broken = True
        return response


@dataclass
class Hold:
    """Keep each request waiting, unanswered, until ``release()``; then answer ``status`` (to whoever is left)."""

    status: int = 503
    released: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0

    async def __call__(self, _request: web.Request, received: Received) -> web.StreamResponse:
        received.held = True
        self.waiting += 1
        try:
            await self.released.wait()
        finally:
            self.waiting -= 1
        return web.Response(status=self.status)

    def release(self) -> None:
        self.released.set()


class Receiver:
    """An HTTP server on loopback with a behaviour per path (200 where none was set), recording every request."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._replies: dict[str, Reply] = {}
        self._secrets: dict[str, tuple[str, ...]] = {}
        self._holds: list[Hold] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown: handlers still running when the test ends (a held request) are not waited on.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        server = site._server  # aiohttp tells no other way which port it bound
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for hold in self._holds:
            hold.release()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def route(self, path: str, reply: Reply, *, secrets: Iterable[str] = ()) -> str:
        """Give ``path`` a behaviour (and the secrets its signatures are checked with); returns its URL."""
        self._replies[path] = reply
        if secrets:
            self.trust(path, *secrets)
        return self.url(path)

    def hold(self, status: int = 503) -> Hold:
        """A ``Hold`` (for ``route``, alone or ``in_turn``) that is released when the receiver stops, at the latest."""
        found = Hold(status)
        self._holds.append(found)
        return found

    def trust(self, path: str, *secrets: str) -> None:
        """Check the signatures of later requests to ``path`` against ``secrets`` (any one may verify)."""
        self._secrets[path] = secrets

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def ids(self, path: str | None = None, *, acknowledged: bool = False) -> set[str]:
        """The distinct webhook-ids received (at ``path``), or only those the receiver answered with a 2xx."""
        found = self.requests if path is None else self.at(path)
        return {r.webhook_id for r in found if r.acknowledged or not acknowledged}

    def senders(self, requests: Iterable[Received], pids: Iterable[int]) -> set[int]:
        """Which of the processes ``pids`` hold the client end of the connections ``requests`` came on, for
        those still open (Linux: the sockets' inodes in /proc/net/tcp, found among each process's descriptors)."""
        inodes: dict[int, str] = {}  # client port -> inode of its socket
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local_port, remote_port = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
            if remote_port == self.port:
                inodes[local_port] = fields[9]
        wanted = {f"socket:[{inodes[r.peer_port]}]" for r in requests if r.peer_port in inodes}
        found = set()
        for pid in pids:
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                            found.add(pid)
                            break
        return found

    async def wait_for(self, condition: Callable[[], bool], *, within: float = 60.0, what: str = "") -> None:
        """Poll ``condition`` until it holds; fails the test (with a summary) after ``within`` seconds."""
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within}s: {what or condition}; {self.summary()}")
            await asyncio.sleep(0.05)

    def summary(self) -> str:
        paths = sorted({r.path for r in self.requests})
        return f"received {len(self.requests)} request(s): " + ", ".join(
            f"{p} x{len(self.at(p))} ({len(self.ids(p))} ids)" for p in paths
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        received = Received(
            path=request.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=await request.read(),
            at=time.monotonic(),
            peer_port=int(peer[1]) if peer else 0,
        )
        secrets = self._secrets.get(request.path)
        if secrets:
            received.verified = any(received.verifies(secret) for secret in secrets)
        self.requests.append(received)
        reply = self._replies.get(request.path, answer(200))
        response = await reply(request, received)
        if request.transport is not None and not request.transport.is_closing():  # else no one hears it
            received.status = response.status
        return response


@dataclass
class Connection:
    at: float
    data: bytes


class SilentServer:
    """Accepts connections on loopback, reads what comes, and never answers nor closes them (until stopped)."""

    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(at=time.monotonic(), data=b"")
        self.connections.append(connection)
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                connection.data += chunk
        # The client gave up and closed its side; ours stays open until the server stops.
