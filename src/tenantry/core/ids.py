"""Identifiers: UUIDv7 (time-ordered, so new rows land at the end of indexes) and secret tokens."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
import uuid

_RAND_BITS = 74
_last = (0, 0)  # (milliseconds, random part) of the id made last in this process
_lock = threading.Lock()
# Random bytes from the OS, fetched 4 KiB at a time rather than by a system call per id; each used once.
_pool = b""
_used = 0


def _random(nbytes: int) -> int:
    """A random number of ``nbytes`` bytes, from the pool (call with ``_lock`` held)."""
    global _pool, _used
    if _used + nbytes > len(_pool):
        _pool, _used = os.urandom(4096), 0
    value = int.from_bytes(_pool[_used : _used + nbytes], "big")
    _used += nbytes
    return value


def _forget_pool() -> None:
    global _pool, _used
    _pool, _used = b"", 0  # a forked child must not draw the bytes its parent draws too


os.register_at_fork(after_in_child=_forget_pool)


def new_id() -> uuid.UUID:
    """A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.

    Within one millisecond, ids of this process keep increasing (RFC 9562's "monotonic random",
    method 2: the next id adds a small random step to the last), so rows made in one transaction
    (an organization, then its first member) sort in the order they were made.
    """
    global _last
    ms = time.time_ns() // 1_000_000
    with _lock:
        last_ms, last_rand = _last
        if ms <= last_ms:
            ms, rand = last_ms, last_rand + 1 + _random(4)
            if rand >> _RAND_BITS:  # the millisecond's room is used up: borrow the next one
                ms, rand = ms + 1, _random(10) >> 6
        else:
            rand = _random(10) >> 6
        _last = (ms, rand)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return uuid_from_int(value)


_UNKNOWN = uuid.SafeUUID.unknown
# UUID's slots, set through their own descriptors: what object.__setattr__ comes to (UUID's __setattr__ refuses
# every write), without looking the attribute up by name (0.21 µs an id made, against 0.34 µs).
_SET_INT = uuid.UUID.__dict__["int"].__set__
_SET_SAFE = uuid.UUID.__dict__["is_safe"].__set__
_NEW = object.__new__
_UUID = uuid.UUID


def uuid_from_int(value: int) -> uuid.UUID:
    """The UUID of a 128-bit ``value`` known to be in range (made here, or read as 32 hex digits): what
    ``uuid.UUID(int=value)`` makes, without its checks, which cost more than the rest of making an id."""
    made: uuid.UUID = _NEW(_UUID)
    _SET_INT(made, value)
    _SET_SAFE(made, _UNKNOWN)
    return made


def new_secret(prefix: str = "", nbytes: int = 32) -> str:
    """An unguessable token for a URL or a header, with an optional readable prefix."""
    return prefix + secrets.token_urlsafe(nbytes)


def digest(secret: str) -> str:
    """The SHA-256 of a high-entropy secret, as stored in place of the secret itself.

    Secrets made by :func:`new_secret` carry 256 random bits, so a fast hash is enough: there is
    nothing to brute-force, unlike a password.
    """
    return hashlib.sha256(secret.encode()).hexdigest()
