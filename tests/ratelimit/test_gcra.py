"""GCRA: exact limits, whatever the timing of requests, and the in-process admission judging to the bit alike."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from tenantry.ratelimit.gcra import Rate, decide, step
from tenantry.ratelimit.store import MemoryStore

times = st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), min_size=1, max_size=200).map(sorted)
rates = st.builds(
    Rate,
    limit=st.integers(min_value=1, max_value=100),
    period=st.floats(min_value=0.1, max_value=100, allow_nan=False),
    burst=st.integers(min_value=1, max_value=50),
)


@given(rates, times)
def test_allowed_requests_never_exceed_burst_plus_rate_times_elapsed(rate: Rate, arrivals: list[float]) -> None:
    tat: float | None = None
    allowed = 0
    for now in arrivals:
        decision, tat = decide(rate, tat, now)
        allowed += decision.allowed
        elapsed = now - arrivals[0]
        assert allowed <= rate.burst + elapsed / rate.emission_interval + 1e-9


@given(rates, st.integers(min_value=1, max_value=200))
def test_a_client_that_keeps_to_the_rate_is_never_refused(rate: Rate, count: int) -> None:
    tat: float | None = None
    for n in range(count):
        decision, tat = decide(rate, tat, n * rate.emission_interval)
        assert decision.allowed


def test_a_burst_is_allowed_at_once_then_one_per_interval() -> None:
    rate = Rate(limit=10, period=60, burst=3)
    tat: float | None = None
    outcomes = []
    for _ in range(4):
        decision, tat = decide(rate, tat, 0.0)
        outcomes.append(decision.allowed)

    assert outcomes == [True, True, True, False]
    refused, _ = decide(rate, tat, 0.0)
    assert refused.retry_after == 6.0
    later, _ = decide(rate, tat, 6.0)
    assert later.allowed


costs = st.integers(min_value=1, max_value=5)


@given(st.lists(rates, min_size=1, max_size=3), costs, times)
def test_the_admission_spends_budgets_exactly_as_the_gcra_step_judges_them(
    budgets: list[Rate], cost: int, arrivals: list[float]
) -> None:
    # MemoryStore.spend writes the step out for speed: every request must get the very same answers from it.
    store = MemoryStore()
    spends = [
        (f"k{n}", cost * rate.emission_interval, rate.emission_interval, rate.tolerance)
        for n, rate in enumerate(budgets)
    ]
    tats: list[float | None] = [None] * len(budgets)
    for now in arrivals:
        told: list[int] = []
        spent = store.spend(spends, now, told)
        expected: list[int] = []
        for n, rate in enumerate(budgets):
            allowed, remaining, _, reset_after, new_tat = step(
                rate.emission_interval, rate.tolerance, tats[n], now, cost
            )
            if not allowed:
                break
            tats[n] = new_tat
            expected += (remaining, math.ceil(reset_after))
        assert told == expected
        assert spent == len(expected) // 2
        if spent < len(budgets):  # the budget that would refuse is judged by take, which spends nothing
            assert not store.take(f"k{spent}", budgets[spent], cost, now)[0]


def _clock_reading_that_rounds_up(interval: float) -> float:
    """A monotonic reading (hours of uptime) at which ``(now + interval) - now`` comes out over ``interval``."""
    now = 6000.0
    while (now + interval) - now <= interval:
        now = math.nextafter(now + 0.001, math.inf)
    return now


def test_what_remains_is_not_told_one_short_when_the_clock_rounds() -> None:
    rate = Rate(limit=3, period=60, burst=3)  # 20 s apart, 3 at once
    now = _clock_reading_that_rounds_up(rate.emission_interval)

    allowed, remaining, *_ = step(rate.emission_interval, rate.tolerance, None, now, 1)
    told: list[int] = []
    spent = MemoryStore().spend([("k", rate.emission_interval, rate.emission_interval, rate.tolerance)], now, told)

    assert (allowed, remaining) == (True, 2)
    assert (spent, told[0]) == (1, 2)
