"""Where a webhook may be sent: the wall between a tenant's URL and our own network (SSRF).

A tenant chooses the URL; our process sends to it from inside our network. Unchecked, a URL could
reach loopback services, the private network, or a cloud metadata endpoint that hands out
credentials. So a webhook may only reach a public address:

- at registration, ``validate_url`` checks the URL's shape (and any IP literal, in every spelling
  the system's resolver accepts), and ``ensure_public`` checks what its name resolves to now;
- at delivery, ``make_connector`` checks every address again, because DNS can answer differently
  later (rebinding). It checks the address the socket connects to, not one looked up beside it:
  the resolver's answers are refused before any socket exists if one of them is not public, and
  the socket factory refuses any address that is not public or not numeric (a numeric one cannot
  be looked up a second time by ``connect``).

``allow_private`` (the ``TENANTRY_WEBHOOK_ALLOW_PRIVATE`` setting) lifts the wall, for tests and for
deployments whose receivers live on a private network.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Iterable

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

__all__ = ["UnsafeAddress", "UnsafeUrl", "ensure_public", "is_public", "make_connector", "validate_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048

# Not reachable from the internet, or not ours to reach, whatever the Python version's own
# ``is_global`` says (its tables changed in 3.11.10/3.12.4; these do not depend on them).
_IPV4_NOT_PUBLIC = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 itself reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT); Alibaba's metadata lives here
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local: AWS, GCP and Azure metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments; Oracle Cloud's metadata is 192.0.0.192
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast, deprecated
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
)
# IPv6 unicast on the internet is 2000::/3; everything else (loopback, IPv4-compatible ::/96,
# unique-local fc00::/7 with AWS's fd00:ec2::254, link-local, site-local, multicast) is not.
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV6_NOT_PUBLIC = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",  # IETF protocol assignments, Teredo (2001::/32) among them: its client address is hidden
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: the last 32 bits are the IPv4 address
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_METADATA = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.169.253",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
        "fd00:ec2::23",
    )
)

# What a host may look like once yarl has lowercased and IDNA-encoded it. Anything else (spaces,
# percent signs) is refused: C resolvers read some of it in ways no check here could follow.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
_NUMERIC_LOOKING = re.compile(r"[0-9a-fx.]+")


class UnsafeUrl(Exception):
    """A URL webhooks may not be sent to; the message says why, in a user's words."""


class UnsafeAddress(OSError):
    """A connection refused before it was made, because its address is not public.

    An ``OSError`` so that aiohttp carries it as the ``os_error`` (and ``__cause__``) of the
    ``aiohttp.ClientConnectorError`` that the request raises.
    """

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)

    def __str__(self) -> str:
        return str(self.strerror)


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is a public unicast address, looking through IPv4 addresses carried in IPv6
    (IPv4-mapped, NAT64 64:ff9b::/96, 6to4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        carried = _carried_ipv4(ip)
        if carried is not None:
            return is_public(carried)
        if ip not in _IPV6_GLOBAL_UNICAST or _within(ip, _IPV6_NOT_PUBLIC):
            return False
    elif _within(ip, _IPV4_NOT_PUBLIC):
        return False
    return ip.is_global and not ip.is_multicast


def _within(ip: IPAddress, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return any(ip in network for network in networks)


def _carried_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _kind(ip: IPAddress) -> str:
    """What ``ip`` is, in words, when it is not public."""
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "loopback (this machine)"
    if ip.is_unspecified:
        return "unspecified (this machine)"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared (carrier-grade NAT)"
    if ip.is_private:
        return "private"
    return "not a public address"


def _why(ip: IPAddress) -> str:
    """Why ``ip`` is refused, as the end of a sentence about it: "is private"."""
    carried = _carried_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    if carried is not None:
        return f"carries {carried}, which is {_kind(carried)}"
    return f"is {_kind(ip)}"


def _describe(ip: IPAddress, written: str | None = None) -> str:
    """Why ``ip`` (perhaps ``written`` otherwise in the URL) is refused: "the address 10.0.0.1 is private"."""
    shown = f"{written} ({ip})" if written is not None and written != str(ip) else str(ip)
    return f"the address {shown} {_why(ip)}"


def _literal(host: str) -> IPAddress | None:
    """The address an IP-literal host names, in any spelling the system accepts (``2130706433``,
    ``0x7f000001``, ``0177.0.0.1``, ``127.1``, ``0``, ``[::ffff:127.0.0.1]``); None for a name.
    Raises ``UnsafeUrl`` for an IPv6 literal that is not one."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise UnsafeUrl(f"{host} is not a valid IPv6 address") from exc
    numeric = host.removesuffix(".")
    if not _NUMERIC_LOOKING.fullmatch(numeric):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(numeric))
    except OSError:
        return None


def _parse(url: str, *, require_https: bool) -> URL:
    """``url`` parsed, if it has a webhook URL's shape. Raises ``UnsafeUrl``."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"webhook URLs can be at most {MAX_URL_LENGTH} characters long")
    try:
        parsed = URL(url)
        port = parsed.port
    except ValueError as exc:
        raise UnsafeUrl(f"this is not a valid URL ({exc})") from exc
    if parsed.scheme not in ("http", "https"):
        raise UnsafeUrl("webhook URLs must use https" if require_https else "webhook URLs must use http or https")
    if require_https and parsed.scheme != "https":
        raise UnsafeUrl("webhook URLs must use https")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise UnsafeUrl("webhook URLs cannot carry a user name or password (they would show in logs)")
    host = parsed.raw_host
    if not host:
        raise UnsafeUrl("webhook URLs need a host")
    if ":" not in host and not _HOST_NAME.fullmatch(host):
        raise UnsafeUrl(f"{host!r} is not a valid host name")
    # DNS's own limits; beyond them the resolver raises UnicodeError (not OSError) rather than not finding it.
    if ":" not in host and (len(host.removesuffix(".")) > 253 or max(map(len, host.split("."))) > 63):
        raise UnsafeUrl(f"{host!r} is not a valid host name (at most 63 characters a label, 253 in all)")
    if port is None or not 0 < port < 65536:
        raise UnsafeUrl("the port must be between 1 and 65535")
    return parsed


def _host(parsed: URL) -> str:
    host = parsed.host if parsed.raw_host and ":" in parsed.raw_host else parsed.raw_host
    assert host is not None  # _parse refused a URL without one
    return host


def _is_local_name(host: str) -> bool:
    name = host.removesuffix(".")
    return name == "localhost" or name.endswith(".localhost")  # RFC 6761: always this machine


def validate_url(url: str, *, require_https: bool, allow_private: bool) -> str:
    """The URL, normalised, if webhooks may be registered to it. Checks its shape: http or https
    (https only if ``require_https``), a host, no user name or password, a valid port, at most 2048
    characters; and, unless ``allow_private``, that an IP-literal host is public. Names are checked
    by ``ensure_public``. Raises ``UnsafeUrl``."""
    parsed = _parse(url, require_https=require_https)
    host = _host(parsed)
    ip = _literal(host)
    if ip is not None:
        if not allow_private and not is_public(ip):
            raise UnsafeUrl(_describe(ip, host))
        if isinstance(ip, ipaddress.IPv4Address) and str(ip) != host:
            raise UnsafeUrl(f"write the address {host} as four decimal numbers: {ip}")
    elif not allow_private and _is_local_name(host):
        raise UnsafeUrl(f"{host} is this machine")
    return str(parsed)


async def ensure_public(url: str, *, allow_private: bool, resolver: AbstractResolver | None = None) -> None:
    """Refuse ``url`` if its host resolves, now, to any address that is not public (unless
    ``allow_private``). A name that does not resolve is accepted: its DNS may come later, and every
    delivery checks again. Raises ``UnsafeUrl``."""
    if allow_private:
        return
    parsed = _parse(url, require_https=False)
    host = _host(parsed)
    ip = _literal(host)
    if ip is not None:
        if not is_public(ip):
            raise UnsafeUrl(_describe(ip))
        return
    if _is_local_name(host):
        raise UnsafeUrl(f"{host} is this machine")
    assert parsed.port is not None  # _parse checked it
    try:
        answers = await (resolver or aiohttp.ThreadedResolver()).resolve(host, parsed.port, socket.AF_UNSPEC)
    except OSError:
        return
    try:
        _check_answers(host, answers)
    except UnsafeAddress as exc:
        raise UnsafeUrl(str(exc)) from exc


def _check_answers(host: str, answers: Iterable[ResolveResult]) -> None:
    """Raises ``UnsafeAddress`` if any of ``host``'s resolved addresses is not public."""
    for answer in answers:
        try:
            ip = ipaddress.ip_address(answer["host"])
        except ValueError:
            raise UnsafeAddress(f"{host} resolves to {answer['host']!r}, which is not a numeric address") from None
        if not is_public(ip):
            raise UnsafeAddress(f"{host} resolves to {ip}, which {_why(ip)}")


def _checked_socket(addr_info: AddrInfoType) -> socket.socket:
    """The socket for one connection, made only if the address it will connect to is public.

    The address must be numeric: ``loop.sock_connect`` would look a name (or a legacy numeric form
    such as ``2130706433``) up again, and connect to an address no one checked.
    """
    family, type_, proto, _, sockaddr = addr_info
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise UnsafeAddress("webhooks are sent over TCP/IP only")
    try:
        ip = ipaddress.ip_address(sockaddr[0])
    except ValueError:
        raise UnsafeAddress(f"{sockaddr[0]!r} is not a numeric address") from None
    if not is_public(ip):
        raise UnsafeAddress(_describe(ip))
    return socket.socket(family=family, type=type_, proto=proto)


class _CheckedResolver(AbstractResolver):
    """Refuses a name if any address it resolves to is not public, before any socket is made.

    Stricter than the socket factory's check, which alone would still try the public addresses of
    a name that also answers a private one; and it names the host in the refusal.
    """

    def __init__(self, resolver: AbstractResolver) -> None:
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._resolver.resolve(host, port, family)
        _check_answers(host, answers)
        return answers

    async def close(self) -> None:
        pass  # the resolver given is its owner's to close; the ThreadedResolver holds nothing


def make_connector(
    *, allow_private: bool, limit: int = 0, limit_per_host: int = 0, resolver: AbstractResolver | None = None
) -> aiohttp.TCPConnector:
    """A connector whose every connection goes to a public address (unless ``allow_private``).

    A refused connection raises ``aiohttp.ClientConnectorError`` (``ClientConnectorDNSError`` for a
    name) whose ``os_error`` and ``__cause__`` are an ``UnsafeAddress``; no socket is made for it.
    ``resolver`` answers DNS (tests inject answers); by default ``getaddrinfo`` in a thread, which
    reads /etc/hosts as the rest of the system does. Call it in the running event loop.
    """
    if allow_private:
        return aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host, resolver=resolver)
    # aiohttp skips the resolver for an IP-literal host: the socket factory is the wall that sees
    # every address, literal or resolved, and it is public API (aiohttp >= 3.12), not a private hook.
    return aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit_per_host,
        resolver=_CheckedResolver(resolver or aiohttp.ThreadedResolver()),
        socket_factory=_checked_socket,
    )
