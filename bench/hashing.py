"""The machine's own argon2id ceiling: how many password verifications per second it can do at all.

A login is one argon2id verification plus a little bookkeeping, so verifications per second with
Tenantry's parameters, on as many threads as Tenantry hashes on, is the most logins per second this
machine could serve; the login storm is read as a fraction of it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher, Type

from tenantry.settings import Settings


@dataclass(frozen=True, slots=True)
class HashingParameters:
    """argon2id cost parameters and the number of threads verifying at once."""

    memory_kib: int
    time_cost: int
    parallelism: int
    threads: int

    @classmethod
    def tenantry_defaults(cls) -> HashingParameters:
        """The parameters a ``tenantry serve`` started without TENANTRY_ARGON2_* variables uses."""
        fields = Settings.model_fields
        return cls(
            memory_kib=fields["argon2_memory_kib"].default,
            time_cost=fields["argon2_time_cost"].default,
            parallelism=fields["argon2_parallelism"].default,
            threads=fields["password_hash_threads"].default,
        )

    def describe(self) -> str:
        return f"m={self.memory_kib} KiB, t={self.time_cost}, p={self.parallelism} on {self.threads} threads"

    def hasher(self) -> PasswordHasher:
        return PasswordHasher(
            time_cost=self.time_cost, memory_cost=self.memory_kib, parallelism=self.parallelism, type=Type.ID
        )


@dataclass(frozen=True, slots=True)
class Verifications:
    """How many verifications finished in how many seconds."""

    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def __add__(self, other: Verifications) -> Verifications:
        return Verifications(self.count + other.count, self.seconds + other.seconds)


def verify_for(parameters: HashingParameters, *, duration: float) -> Verifications:
    """Verify one password on ``parameters.threads`` threads for ``duration`` seconds.

    argon2-cffi releases the GIL while it hashes, so the threads really run in parallel.
    """
    hasher = parameters.hasher()
    password = "correct horse battery staple"
    encoded = hasher.hash(password)
    hasher.verify(encoded, password)  # warm the allocator and the code path once
    started = time.perf_counter()
    deadline = started + duration

    def verify_until_deadline() -> int:
        count = 0
        while time.perf_counter() < deadline:
            hasher.verify(encoded, password)
            count += 1
        return count

    with ThreadPoolExecutor(max_workers=parameters.threads, thread_name_prefix="bench-argon2") as pool:
        futures = [pool.submit(verify_until_deadline) for _ in range(parameters.threads)]
        count = sum(future.result() for future in futures)
    return Verifications(count, time.perf_counter() - started)
