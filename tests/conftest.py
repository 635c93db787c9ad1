"""Fixtures every test shares: both databases (SQLite and a fresh PostgreSQL), a real SMTP sink,
an application wired to them, and an HTTP client.

Storage-touching tests take ``database_url`` (directly or through ``app``/``client``) and run once
per backend. PostgreSQL must be reachable: a missing server fails the run, it is not skipped.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tenantry.app import create_app
from tenantry.db import migrate
from tenantry.db.base import Base
from tenantry.db.engine import Database
from tenantry.platform import Platform
from tenantry.settings import Settings
from tests.limits import GENEROUS_LIMITS, SHED_LAG_HARD, SHED_LAG_SOFT
from tests.webhooks.pg_cluster import PgCluster

if TYPE_CHECKING:
    from tests.servers import Fleet
from tests.mailsink import MailSink

PG_ADMIN_URL = os.environ.get("TENANTRY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TENANTRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKENDS = ["sqlite", "postgresql"]
# Every Settings() a test makes reads this unless it says otherwise (see tests/servers.py).
os.environ.setdefault("TENANTRY_RATE_LIMITS", GENEROUS_LIMITS)
# A suite of real servers and browsers on two cores makes event loops late by more than the production
# shedding thresholds (0.1 s / 0.3 s): pages would be shed at random. Shedding's tests set their own.
os.environ.setdefault("TENANTRY_SHED_LAG_SOFT", SHED_LAG_SOFT)
os.environ.setdefault("TENANTRY_SHED_LAG_HARD", SHED_LAG_HARD)


# The socket guard: no test may send a packet beyond this machine. Every connect (and every
# addressed send) the test process makes to an internet address outside 127.0.0.0/8 and ::1 is
# refused with ConnectionRefusedError before the system call, wherever it comes from: a plain
# socket, asyncio's sock_connect (which sets it on its future), aiohttp (which wraps it in
# ClientConnectorError). Unix sockets pass. The hook stays for the whole process, so it returns at
# once for every other audit event. ``connect_attempts`` shows a test what was attempted.
GUARD_MESSAGE = "test guard: tests may only connect to loopback"
_GUARDED_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
_INTERNET = (socket.AF_INET, socket.AF_INET6)
_connect_watchers: list[list[tuple[str, int]]] = []


def _is_loopback(host: str) -> bool:
    if host == "localhost":  # a name given to connect() itself; /etc/hosts says where it leads
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # any other name would need DNS: not in tests
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _socket_guard(event: str, args: tuple[object, ...]) -> None:
    if event not in _GUARDED_EVENTS:
        return
    sock, address = args
    if not isinstance(sock, socket.socket) or sock.family not in _INTERNET or not isinstance(address, tuple):
        return
    host, port = str(address[0]), int(address[1])
    for watcher in _connect_watchers:
        watcher.append((host, port))
    if not _is_loopback(host):
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"{GUARD_MESSAGE}, not {host}:{port}")


sys.addaudithook(_socket_guard)


@pytest.fixture
def connect_attempts() -> Iterator[list[tuple[str, int]]]:
    """Every (host, port) this test process tries to connect or send to while the test runs, allowed
    or refused by the guard, from any thread."""
    attempts: list[tuple[str, int]] = []
    _connect_watchers.append(attempts)
    yield attempts
    _connect_watchers.remove(attempts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _pg_admin(statement: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _create_pg_database(name: str) -> None:
    await _pg_admin(f'CREATE DATABASE "{name}"')


async def _drop_pg_database(name: str) -> None:
    await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One fresh, migrated database per backend for the whole run."""
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'tenantry.db'}"
    name = f"tenantry_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_pg_database(name))
    host = PG_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0]
    pg_url = f"postgresql+asyncpg://{host}/{name}"
    try:
        migrate.upgrade(sqlite_url)
        migrate.upgrade(pg_url)
        yield {"sqlite": sqlite_url, "postgresql": pg_url}
    finally:
        asyncio.run(_drop_pg_database(name))


async def truncate_all(url: str) -> None:
    engine = create_async_engine(url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as connection:
        if url.startswith("sqlite"):
            for table in tables:
                await connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608 (names from our metadata)
        else:
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, migrated_databases: dict[str, str]) -> str:
    """The URL of an empty, migrated database, once per backend."""
    url = migrated_databases[request.param]
    await truncate_all(url)
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The database port on an empty, migrated database, once per backend (no application around it)."""
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture(scope="session", autouse=True)
def fresh_redis_database() -> None:
    """Empty the test's own Redis database (index 15), so limits spent by an earlier run do not linger."""

    async def flush() -> None:
        client = Redis.from_url(REDIS_URL)
        try:
            await client.flushdb()
        finally:
            await client.aclose()

    asyncio.run(flush())


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    """A client of the test's Redis database."""
    client = Redis.from_url(REDIS_URL)
    await client.ping()  # a missing server fails the test, it is not skipped
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def mail_sink() -> Iterator[MailSink]:
    sink = MailSink(port=free_port())
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def mail(mail_sink: MailSink) -> MailSink:
    mail_sink.clear()
    return mail_sink


@pytest.fixture
def settings(database_url: str, tmp_path: Path, mail: MailSink) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        smtp_url=f"smtp://127.0.0.1:{mail.port}",
        base_url="http://testserver",
        log_level="warning",
    )


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Real ``tenantry serve`` processes of the test's own, all stopped when it ends."""
    from tests.servers import Fleet as Fleet_  # tests.servers imports this module: import when asked

    servers = Fleet_(tmp_path)
    yield servers
    servers.stop()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings, access_log=False)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def platform(app: FastAPI) -> Platform:
    found = app.state.platform
    assert isinstance(found, Platform)
    return found


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def pg_cluster() -> AsyncIterator[PgCluster]:
    """A PostgreSQL server of the test's own, running, with an empty database ``tenantry``; deleted afterwards."""
    cluster = PgCluster()
    try:
        await asyncio.to_thread(cluster.init)
        await asyncio.to_thread(cluster.start)
        await cluster.create_database()
        yield cluster
    finally:
        await asyncio.to_thread(cluster.destroy)
