"""The SSRF wall: a webhook reaches public addresses only, checked at registration and again on the very
address each delivery connects to.

Every refused delivery is aimed at a real sink listening on loopback (127.0.0.1 and ::1, same port), so a
hole in the wall would show as a request in the sink; and ``connect_attempts`` (tests/conftest.py) shows
that no connect was even attempted: the refusal came first. Names other than ``localhost`` are answered
by a stub resolver, so no test asks real DNS; the only packets sent go to loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from tenantry.webhooks.addresses import (
    UnsafeAddress,
    UnsafeUrl,
    ensure_public,
    is_public,
    make_connector,
    validate_url,
)
from tests.conftest import GUARD_MESSAGE, free_port

PUBLIC = "93.184.216.34"  # only ever reaches the test guard, which refuses it before the system call

# Hosts refused at registration and at delivery, as written in a URL, with the address they mean.
NOT_PUBLIC = {
    "127.0.0.1": "127.0.0.1",
    "127.255.255.254": "127.255.255.254",
    "[::1]": "::1",
    "10.0.0.1": "10.0.0.1",
    "172.16.0.1": "172.16.0.1",
    "192.168.1.1": "192.168.1.1",
    "169.254.169.254": "169.254.169.254",  # AWS, GCP, Azure metadata
    "100.100.100.200": "100.100.100.200",  # Alibaba metadata
    "192.0.0.192": "192.0.0.192",  # Oracle Cloud metadata
    "[fd00:ec2::254]": "fd00:ec2::254",  # AWS metadata over IPv6
    "100.64.0.1": "100.64.0.1",  # shared address space (carrier-grade NAT)
    "0.0.0.0": "0.0.0.0",  # noqa: S104 (a URL to refuse, not an address to bind)
    "[::]": "::",
    "[fe80::1]": "fe80::1",
    "224.0.0.1": "224.0.0.1",
    "[ff02::1]": "ff02::1",
    "240.0.0.1": "240.0.0.1",
    "255.255.255.255": "255.255.255.255",
    "198.18.0.1": "198.18.0.1",
    "[::ffff:127.0.0.1]": "127.0.0.1",  # IPv4-mapped
    "[::ffff:10.0.0.1]": "10.0.0.1",
    "[::ffff:169.254.169.254]": "169.254.169.254",
    "[64:ff9b::7f00:1]": "127.0.0.1",  # NAT64, well-known prefix
    "[64:ff9b::a9fe:a9fe]": "169.254.169.254",
    "[2002:7f00:1::1]": "127.0.0.1",  # 6to4
    "[2002:a00:1::1]": "10.0.0.1",
    "[::127.0.0.1]": "::7f00:1",  # IPv4-compatible (deprecated)
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]": "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "[fec0::1]": "fec0::1",  # site-local (deprecated)
}
# Legacy spellings of IPv4 that inet_aton (and so getaddrinfo) accept.
LEGACY = {
    "2130706433": "127.0.0.1",
    "0x7f000001": "127.0.0.1",
    "0x7F000001": "127.0.0.1",
    "017700000001": "127.0.0.1",
    "0177.0.0.1": "127.0.0.1",
    "0x7f.0.0.1": "127.0.0.1",
    "127.1": "127.0.0.1",
    "127.0.1": "127.0.0.1",
    "0": "0.0.0.0",  # noqa: S104
    "167772161": "10.0.0.1",
    "0xa9.0xfe.0xa9.0xfe": "169.254.169.254",
}


class StubResolver(AbstractResolver):
    """DNS of the test's choosing: each name has a list of answers, one per lookup (the last repeats).
    A name it does not know does not resolve."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        rounds = self.answers.get(host)
        if rounds is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = rounds[min(self.lookups.count(host), len(rounds) - 1)]
        self.lookups.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in answer
        ]

    async def close(self) -> None:
        pass


class Sink:
    """An HTTP server on 127.0.0.1 and ::1 (one port) that records the body of every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[bytes] = []
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._record)
        self._runner = web.AppRunner(app, access_log=None)

    async def _record(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(status=204)

    async def start(self) -> None:
        await self._runner.setup()
        for host in ("127.0.0.1", "::1"):
            await web.TCPSite(self._runner, host, self.port).start()

    async def stop(self) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    server = Sink()
    await server.start()
    yield server
    await server.stop()


async def post(url: str, *, allow_private: bool, resolver: AbstractResolver | None = None) -> int:
    """POST to ``url`` as a delivery does; the status."""
    timeout = aiohttp.ClientTimeout(total=10)
    connector = make_connector(allow_private=allow_private, resolver=resolver)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session,
        session.post(url, data=b'{"type":"ping"}', allow_redirects=False) as response,
    ):
        return response.status


async def refused(url: str, *, resolver: AbstractResolver | None = None) -> UnsafeAddress:
    """The ``UnsafeAddress`` a delivery to ``url`` is refused with."""
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await post(url, allow_private=False, resolver=resolver)
    assert isinstance(caught.value.os_error, UnsafeAddress)
    assert caught.value.__cause__ is caught.value.os_error
    return caught.value.os_error


def no_connect(attempts: list[tuple[str, int]], sink: Sink) -> None:
    """Nothing was connected to, nor even tried, and nothing arrived."""
    assert attempts == []
    assert sink.bodies == []


# -- is_public ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [
        PUBLIC,
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", sorted({*NOT_PUBLIC.values(), "fe80::1%1", "64:ff9b:1::a00:1", "2001:db8::1"}))
def test_other_addresses_are_not(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


# -- validate_url -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", [*NOT_PUBLIC, *LEGACY])
def test_registration_refuses_every_spelling_of_an_address_that_is_not_public(host: str) -> None:
    with pytest.raises(UnsafeUrl) as refusal:
        validate_url(f"https://{host}/hooks", require_https=True, allow_private=False)
    meant = NOT_PUBLIC.get(host) or LEGACY[host]
    assert meant in str(refusal.value) or str(ipaddress.ip_address(meant)) in str(refusal.value)


def test_the_refusal_says_why() -> None:
    cases = {
        "http://10.0.0.1/": "the address 10.0.0.1 is private",
        "http://127.0.0.1:8080/": "the address 127.0.0.1 is loopback (this machine)",
        "http://2130706433/": "the address 2130706433 (127.0.0.1) is loopback (this machine)",
        "http://169.254.169.254/latest/meta-data/": "the address 169.254.169.254 is a cloud metadata address",
        "http://100.64.0.1/": "the address 100.64.0.1 is shared (carrier-grade NAT)",
        "http://[::ffff:127.0.0.1]/": "the address ::ffff:7f00:1 carries 127.0.0.1, which is loopback (this machine)",
        "http://localhost:8000/": "localhost is this machine",
        "http://api.localhost/": "api.localhost is this machine",
    }
    for url, why in cases.items():
        with pytest.raises(UnsafeUrl) as refusal:
            validate_url(url, require_https=False, allow_private=False)
        assert str(refusal.value) == why


def test_https_is_required_in_production() -> None:
    with pytest.raises(UnsafeUrl, match="webhook URLs must use https"):
        validate_url("http://example.com/hooks", require_https=True, allow_private=False)
    assert validate_url("https://example.com/hooks", require_https=True, allow_private=False)
    assert validate_url("http://example.com/hooks", require_https=False, allow_private=False)


@pytest.mark.parametrize(
    "url",
    ["https://user:secret@example.com/", "https://user@example.com/", "https://:secret@example.com/"],
)
def test_credentials_in_the_url_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="cannot carry a user name or password"):
        validate_url(url, require_https=True, allow_private=True)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/", "must use http or https"),
        ("file:///etc/passwd", "must use http or https"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "must use http or https"),
        ("https:///hooks", "need a host"),
        ("not a url", "must use http or https"),
        ("https://example.com:0/", "port must be between 1 and 65535"),
        ("https://example.com:65536/", "not a valid URL"),
        ("https://%31%32%37.0.0.1/", "not a valid host name"),
        ("https://127.0.0.1 .example.com/", "not a valid host name"),
        ("https://example.com/" + "a" * 2030, "at most 2048 characters"),
    ],
)
def test_malformed_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(UnsafeUrl, match=why):
        validate_url(url, require_https=False, allow_private=True)


def test_a_good_url_comes_back_normalised() -> None:
    assert validate_url("HTTPS://Hooks.Example.COM/in?x=1", require_https=True, allow_private=False) == (
        "https://hooks.example.com/in?x=1"
    )
    assert validate_url("https://münchen.example/", require_https=True, allow_private=False) == (
        "https://xn--mnchen-3ya.example/"
    )
    assert validate_url(f"https://{PUBLIC}:8443/", require_https=True, allow_private=False)


def test_allow_private_lifts_the_wall_but_not_the_shape() -> None:
    for host in NOT_PUBLIC:
        assert validate_url(f"http://{host}/hooks", require_https=False, allow_private=True)
    assert validate_url("http://localhost:8000/", require_https=False, allow_private=True)
    with pytest.raises(UnsafeUrl, match=r"^write the address 127\.1 as four decimal numbers: 127\.0\.0\.1$"):
        validate_url("http://127.1/", require_https=False, allow_private=True)
    # A legacy spelling of a public address would be refused by aiohttp at every delivery: say so now.
    with pytest.raises(UnsafeUrl, match=r"four decimal numbers: 8\.8\.8\.8$"):
        validate_url("http://134744072/", require_https=False, allow_private=False)


# -- ensure_public ------------------------------------------------------------------------------------------------
async def test_registration_refuses_a_name_resolving_to_a_private_address() -> None:
    resolver = StubResolver({"internal.example": [["10.0.0.1"]]})
    with pytest.raises(UnsafeUrl, match=r"^internal\.example resolves to 10\.0\.0\.1, which is private$"):
        await ensure_public("https://internal.example/hooks", allow_private=False, resolver=resolver)


@pytest.mark.parametrize(
    "answer", [["127.0.0.1"], ["169.254.169.254"], ["fd00:ec2::254"], ["::ffff:10.0.0.1"], [PUBLIC, "10.0.0.1"]]
)
async def test_registration_refuses_a_name_if_any_answer_is_not_public(answer: list[str]) -> None:
    resolver = StubResolver({"mixed.example": [answer]})
    with pytest.raises(UnsafeUrl, match=r"^mixed\.example resolves to "):
        await ensure_public("https://mixed.example/", allow_private=False, resolver=resolver)


async def test_registration_refuses_localhost_and_literals_without_asking_dns() -> None:
    resolver = StubResolver({})
    for url in ("http://localhost:8000/", "http://10.0.0.1/", "http://0x7f000001/", "http://[::1]/"):
        with pytest.raises(UnsafeUrl):
            await ensure_public(url, allow_private=False, resolver=resolver)
    assert resolver.lookups == []


async def test_registration_accepts_public_names_and_names_that_do_not_resolve_yet() -> None:
    resolver = StubResolver({"hooks.example": [[PUBLIC, "2606:4700:4700::1111"]]})
    await ensure_public("https://hooks.example/in", allow_private=False, resolver=resolver)
    await ensure_public("https://not-yet.example/in", allow_private=False, resolver=resolver)
    await ensure_public(f"https://{PUBLIC}/in", allow_private=False, resolver=resolver)
    assert resolver.lookups == ["hooks.example"]  # the unknown name was asked too, and did not resolve


async def test_registration_with_allow_private_asks_nothing() -> None:
    resolver = StubResolver({"internal.example": [["10.0.0.1"]]})
    await ensure_public("https://internal.example/", allow_private=True, resolver=resolver)
    assert resolver.lookups == []


# -- delivery: make_connector -------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", list(NOT_PUBLIC))
async def test_delivery_refuses_non_public_literals_before_connecting(
    host: str, sink: Sink, connect_attempts: list[tuple[str, int]]
) -> None:
    unsafe = await refused(f"http://{host}:{sink.port}/hooks")
    assert "the address" in str(unsafe)
    no_connect(connect_attempts, sink)


@pytest.mark.parametrize("host", list(LEGACY))
async def test_delivery_refuses_legacy_spellings_before_connecting(
    host: str, sink: Sink, connect_attempts: list[tuple[str, int]]
) -> None:
    # aiohttp refuses an all-digit non-canonical IPv4 host itself; the others reach our resolver.
    with pytest.raises((aiohttp.InvalidUrlClientError, aiohttp.ClientConnectorError)) as caught:
        await post(f"http://{host}:{sink.port}/hooks", allow_private=False)
    if isinstance(caught.value, aiohttp.ClientConnectorError):
        assert isinstance(caught.value.os_error, UnsafeAddress)
    no_connect(connect_attempts, sink)


async def test_delivery_refuses_localhost_as_the_system_resolves_it(
    sink: Sink, connect_attempts: list[tuple[str, int]]
) -> None:
    unsafe = await refused(f"http://localhost:{sink.port}/hooks")  # the real resolver, /etc/hosts
    assert str(unsafe).startswith("localhost resolves to ")
    no_connect(connect_attempts, sink)


@pytest.mark.parametrize("answer", [["10.0.0.1"], ["127.0.0.1"], ["::1"], [PUBLIC, "127.0.0.1"], ["::ffff:127.0.0.1"]])
async def test_delivery_refuses_a_name_resolving_to_a_private_address(
    answer: list[str], sink: Sink, connect_attempts: list[tuple[str, int]]
) -> None:
    resolver = StubResolver({"internal.example": [answer]})
    unsafe = await refused(f"http://internal.example:{sink.port}/hooks", resolver=resolver)
    assert str(unsafe).startswith("internal.example resolves to ")
    assert resolver.lookups == ["internal.example"]
    no_connect(connect_attempts, sink)  # not even the public answer of a mixed one was tried


async def test_dns_rebinding_passes_registration_and_is_refused_at_delivery(
    sink: Sink, connect_attempts: list[tuple[str, int]]
) -> None:
    resolver = StubResolver({"rebind.example": [[PUBLIC], ["127.0.0.1"]]})
    url = validate_url(f"http://rebind.example:{sink.port}/hooks", require_https=False, allow_private=False)
    await ensure_public(url, allow_private=False, resolver=resolver)  # first answer: public

    unsafe = await refused(url, resolver=resolver)  # second answer: our own machine, where the sink listens
    assert str(unsafe) == "rebind.example resolves to 127.0.0.1, which is loopback (this machine)"
    assert resolver.lookups == ["rebind.example", "rebind.example"]
    no_connect(connect_attempts, sink)


async def test_a_name_answered_with_a_name_is_not_looked_up_again(
    sink: Sink, connect_attempts: list[tuple[str, int]]
) -> None:
    # Connecting to "localhost" or "2130706433" would make asyncio resolve it a second time, unchecked.
    resolver = StubResolver({"sneaky.example": [["localhost"]], "sneakier.example": [["2130706433"]]})
    for name in ("sneaky.example", "sneakier.example"):
        unsafe = await refused(f"http://{name}:{sink.port}/", resolver=resolver)
        assert "which is not a numeric address" in str(unsafe)
    no_connect(connect_attempts, sink)


async def test_a_public_address_passes_and_is_the_one_connected_to(connect_attempts: list[tuple[str, int]]) -> None:
    # The wall lets it through; the test guard then stops it before the system call, so no packet leaves.
    resolver = StubResolver({"hooks.example": [[PUBLIC]]})
    for url in ("http://hooks.example:8080/in", f"http://{PUBLIC}:8080/in"):
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await post(url, allow_private=False, resolver=resolver)
        assert isinstance(caught.value.os_error, ConnectionRefusedError)
        assert GUARD_MESSAGE in str(caught.value.os_error)
    assert set(connect_attempts) == {(PUBLIC, 8080)}  # exactly the address checked: nothing looked up beside it


async def test_allow_private_reaches_a_receiver_on_loopback(
    sink: Sink, connect_attempts: list[tuple[str, int]]
) -> None:
    resolver = StubResolver({"internal.example": [["127.0.0.1"]]})
    for url in (
        f"http://127.0.0.1:{sink.port}/hooks",
        f"http://[::1]:{sink.port}/hooks",
        f"http://internal.example:{sink.port}/hooks",
    ):
        assert await post(url, allow_private=True, resolver=resolver) == 204
    assert await post(f"http://localhost:{sink.port}/hooks", allow_private=True) == 204  # the system's resolver
    assert sink.bodies == [b'{"type":"ping"}'] * 4
    assert {host for host, _ in connect_attempts} <= {"127.0.0.1", "::1"}


async def test_a_delivery_connector_honours_its_limits() -> None:
    connector = make_connector(allow_private=False, limit=7, limit_per_host=3)
    try:
        assert (connector.limit, connector.limit_per_host) == (7, 3)
    finally:
        await connector.close()


# -- the test guard (tests/conftest.py) ---------------------------------------------------------------------------
def test_the_guard_lets_loopback_through_and_records_it(connect_attempts: list[tuple[str, int]]) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    assert connect_attempts == [("127.0.0.1", port)]


def test_the_guard_refuses_anything_else_before_sending(connect_attempts: list[tuple[str, int]]) -> None:
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match=GUARD_MESSAGE):
        sock.connect(("10.0.0.1", 9))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(ConnectionRefusedError):
        sock.sendto(b"x", ("10.0.0.1", 9))
    assert connect_attempts == [("10.0.0.1", 9), ("10.0.0.1", 9)]


async def test_the_guard_reaches_through_asyncio_and_aiohttp(connect_attempts: list[tuple[str, int]]) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        with pytest.raises(ConnectionRefusedError, match=GUARD_MESSAGE):
            await loop.sock_connect(sock, ("10.0.0.1", 9))
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await post("http://10.0.0.1:9/", allow_private=True)  # no wall: only the guard stands here
    assert GUARD_MESSAGE in str(caught.value.os_error)
    assert connect_attempts == [("10.0.0.1", 9), ("10.0.0.1", 9)]


def test_the_guard_lets_unix_sockets_through(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)


def test_the_guard_refuses_ipv4_mapped_private_and_other_ipv6(connect_attempts: list[tuple[str, int]]) -> None:
    for address in ("::ffff:10.0.0.1", "fd00:ec2::254"):
        with socket.socket(socket.AF_INET6) as sock, pytest.raises(ConnectionRefusedError, match=GUARD_MESSAGE):
            sock.connect((address, 9, 0, 0))
    assert [host for host, _ in connect_attempts] == ["::ffff:10.0.0.1", "fd00:ec2::254"]
