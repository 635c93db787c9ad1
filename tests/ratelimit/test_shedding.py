"""Load shedding: a stalled event loop or too many requests in flight refuse low, then normal
priority; critical requests always pass, and everything passes again once the load is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from tenantry.ratelimit.shedding import LoadShedder, Priority


def shed_so_far(priority: str) -> float:
    return REGISTRY.get_sample_value("tenantry_requests_shed_total", {"priority": priority}) or 0.0


def admitted(shedder: LoadShedder) -> dict[Priority, bool]:
    return {priority: shedder.admit(priority) for priority in Priority}


@pytest.fixture
async def shedder() -> AsyncIterator[LoadShedder]:
    running = LoadShedder(max_in_flight=10, lag_soft=0.1, lag_hard=0.3, interval=0.02)
    await running.start()
    yield running
    await running.stop()


async def test_a_blocked_loop_sheds_low_and_normal_but_not_critical(shedder: LoadShedder) -> None:
    await asyncio.sleep(0.1)  # the monitor runs on an idle loop
    assert admitted(shedder) == dict.fromkeys(Priority, True)
    assert shedder.level == 0
    low_before, normal_before = shed_so_far("low"), shed_so_far("normal")

    time.sleep(0.6)  # noqa: ASYNC251 (blocking the event loop is what this test is about)
    deadline = time.monotonic() + 5
    while shedder.lag <= shedder.lag_hard:
        assert time.monotonic() < deadline, "the stall was never measured"
        await asyncio.sleep(0.01)

    assert shedder.level == 2
    assert admitted(shedder) == {Priority.CRITICAL: True, Priority.NORMAL: False, Priority.LOW: False}
    assert shed_so_far("low") == low_before + 1
    assert shed_so_far("normal") == normal_before + 1


async def test_the_lag_decays_once_the_loop_is_idle_and_all_are_admitted_again(shedder: LoadShedder) -> None:
    await asyncio.sleep(0.1)
    time.sleep(0.6)  # noqa: ASYNC251 (blocking the event loop is what this test is about)
    await asyncio.sleep(0.05)  # the monitor wakes once, late
    assert shedder.lag > shedder.lag_hard

    deadline = time.monotonic() + 10
    while not all(admitted(shedder).values()):
        assert time.monotonic() < deadline, f"the lag never decayed (still {shedder.lag:.3f} s)"
        await asyncio.sleep(0.05)

    assert shedder.lag <= shedder.lag_soft
    assert shedder.level == 0


async def test_in_flight_requests_shed_low_past_80_percent_and_normal_at_the_maximum() -> None:
    shedder = LoadShedder(max_in_flight=10)  # the monitor is not started: only the in-flight bound counts
    levels = {}
    for count in range(1, 11):
        shedder.enter()
        levels[count] = (shedder.level, admitted(shedder))

    everyone = dict.fromkeys(Priority, True)
    assert levels[8] == (0, everyone)  # 80 % exactly still admits low priority
    assert levels[9] == (1, {Priority.CRITICAL: True, Priority.NORMAL: True, Priority.LOW: False})
    assert levels[10] == (2, {Priority.CRITICAL: True, Priority.NORMAL: False, Priority.LOW: False})
    assert shedder.in_flight == 10

    for _ in range(10):
        shedder.leave()
    assert admitted(shedder) == everyone


async def test_track_counts_a_request_in_flight_however_it_ends() -> None:
    shedder = LoadShedder(max_in_flight=1)

    with shedder.track():
        assert shedder.in_flight == 1
        assert not shedder.admit(Priority.NORMAL)
        assert shedder.admit(Priority.CRITICAL)
    with pytest.raises(RuntimeError), shedder.track():
        raise RuntimeError("the handler failed")

    assert shedder.in_flight == 0
    assert shedder.admit(Priority.NORMAL)


async def test_the_lag_gauge_is_exported(shedder: LoadShedder) -> None:
    await asyncio.sleep(0.1)

    assert REGISTRY.get_sample_value("tenantry_event_loop_lag_seconds") is not None


async def test_start_and_stop_are_idempotent() -> None:
    shedder = LoadShedder()
    await shedder.start()
    await shedder.start()
    await shedder.stop()
    await shedder.stop()

    assert shedder.lag < shedder.lag_hard


def test_thresholds_must_make_sense() -> None:
    with pytest.raises(ValueError, match="lag_soft <= lag_hard"):
        LoadShedder(lag_soft=0.5, lag_hard=0.1)
