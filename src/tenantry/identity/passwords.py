"""Passwords: the strength rules, and argon2id hashing on a bounded thread pool.

Hashing costs tens of milliseconds of CPU by design; it never runs on the event loop, and only
``threads`` hashes run at once so that a login storm cannot starve everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from tenantry.identity.errors import WeakPassword


@cache
def _common_passwords() -> frozenset[str]:
    return frozenset(FREQUENCY_LISTS["passwords"])


def check_strength(password: str, *, email: str, min_length: int, max_length: int) -> None:
    """Raise ``WeakPassword`` unless ``password`` is long enough, not common and not the email."""
    if len(password) < min_length:
        raise WeakPassword(f"Use at least {min_length} characters.")
    if len(password) > max_length:
        raise WeakPassword(f"Use at most {max_length} characters.")
    lowered = password.strip().lower()
    if lowered in _common_passwords():
        raise WeakPassword("This password is one of the most common ones; choose another.")
    email = email.strip().lower()
    if lowered in (email, email.partition("@")[0]):
        raise WeakPassword("The password must not be your email address.")
    if len(set(password)) < 3:
        raise WeakPassword("Use more than two different characters.")


def _yield_to_others() -> None:
    """Run this hashing thread only when nothing else wants the CPU (Linux ``SCHED_IDLE``, per thread).

    Hashing is throughput work; the event loop and the database threads are latency work. With
    every core busy hashing during a login storm, the loop still gets a core the moment it has
    something to do, so one tenant's storm does not slow every other request. Where the policy
    is unavailable, the thread is niced instead.
    """
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, tid, HASH_THREAD_NICENESS)


HASH_THREAD_NICENESS = 19


class PasswordService:
    """Hashes and verifies on ``threads`` worker threads (argon2 releases the GIL while it works)."""

    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int, threads: int) -> None:
        self.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2", initializer=_yield_to_others)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches; a malformed stored hash counts as a mismatch."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._verify, password_hash, password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self.hasher.check_needs_rehash(password_hash)

    async def prepare(self) -> None:
        """Make the stand-in hash that :meth:`burn` verifies against (at start, not on a first request)."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))

    async def burn(self, password: str) -> None:
        """Spend the time of one verification, for an unknown account, so timing does not tell."""
        await self.prepare()
        assert self._dummy_hash is not None
        await self.verify(self._dummy_hash, password)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
