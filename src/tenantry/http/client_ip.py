"""The client's address: the socket peer, or ``X-Forwarded-For`` when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(spec: str | Iterable[str]) -> list[Network]:
    items = spec.split(",") if isinstance(spec, str) else spec
    return [ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip()]


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """Walk ``X-Forwarded-For`` from the right while the hops are trusted proxies.

    An untrusted peer's header is ignored entirely: anyone can write one, and believing it would
    let a client pick a fresh address (and a fresh rate-limit budget) for every request.
    """
    if peer is None or not trusted or not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    address = peer
    while hops:
        address = hops.pop()
        if not _is_trusted(address, trusted):
            return address
    return address
