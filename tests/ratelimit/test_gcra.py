"""GCRA: exact limits, whatever the timing of requests."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tenantry.ratelimit.gcra import Rate, decide

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
