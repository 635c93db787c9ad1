"""The Generic Cell Rate Algorithm: exact rate limits with one number per key.

A limit of ``limit`` per ``period`` with a burst of ``burst`` keeps, per key, the theoretical
arrival time (TAT) of the next request. A request costing ``cost`` is allowed when
``max(TAT, now) + cost·T - now <= burst·T`` with ``T = period / limit``; allowing it moves TAT on by
``cost·T``. Nothing else is stored, and nothing needs a sliding window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Float sums of intervals must not refuse a client exactly on time, nor tell it one request less than it
# has left: (now + interval) - now can come out a hair under interval, and the larger the monotonic clock
# (a machine's uptime), the more often. Both comparisons and the floor of what remains allow this much.
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    period: float  # seconds
    burst: int
    # Worked out once: every check of every request reads them.
    emission_interval: float = field(init=False, repr=False, compare=False)
    tolerance: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        interval = self.period / self.limit
        object.__setattr__(self, "emission_interval", interval)
        object.__setattr__(self, "tolerance", interval * self.burst)


# Not frozen: a frozen dataclass's __init__ costs about a microsecond, paid for every check of every request.
@dataclass(slots=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after: float  # seconds until a request of this cost would be allowed (0 when allowed)
    reset_after: float  # seconds until the key is back to a full burst


# allowed, remaining, retry_after, reset_after, and the TAT to keep
Step = tuple[bool, int, float, float, float]


def step(interval: float, tolerance: float, tat: float | None, now: float, cost: int) -> Step:
    """The GCRA step in plain values (what :func:`decide` judges, without making a Decision: the
    admission of every request calls this for each of its budgets).

    A refused request leaves TAT as it was, so that refusals cost the client nothing more.
    """
    base = tat if tat is not None and tat > now else now
    new_tat = base + cost * interval
    allow_at = new_tat - tolerance
    if allow_at - now > EPSILON:
        left = int((tolerance - (base - now)) / interval + EPSILON)
        return False, left if left > 0 else 0, allow_at - now, base - now, base
    left = int((tolerance - (new_tat - now)) / interval + EPSILON)
    return True, left if left > 0 else 0, 0.0, new_tat - now, new_tat


def decide(rate: Rate, tat: float | None, now: float, cost: int = 1) -> tuple[Decision, float]:
    """Judge a request of ``cost`` at ``now`` against stored ``tat``; returns the decision and new TAT."""
    allowed, remaining, retry_after, reset_after, new_tat = step(rate.emission_interval, rate.tolerance, tat, now, cost)
    return Decision(allowed, remaining, retry_after, reset_after), new_tat
