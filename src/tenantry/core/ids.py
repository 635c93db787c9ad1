"""Identifiers: UUIDv7 (time-ordered, so new rows land at the end of indexes) and secret tokens."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid


def new_id() -> uuid.UUID:
    """A random UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big") & ((1 << 74) - 1)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


def new_secret(prefix: str = "", nbytes: int = 32) -> str:
    """An unguessable token for a URL or a header, with an optional readable prefix."""
    return prefix + secrets.token_urlsafe(nbytes)


def digest(secret: str) -> str:
    """The SHA-256 of a high-entropy secret, as stored in place of the secret itself.

    Secrets made by :func:`new_secret` carry 256 random bits, so a fast hash is enough: there is
    nothing to brute-force, unlike a password.
    """
    return hashlib.sha256(secret.encode()).hexdigest()
