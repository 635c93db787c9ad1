"""A delivering process with nothing to send stays asleep."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tenantry.platform import Platform
from tenantry.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True, "embedded_worker": True})


async def test_an_idle_deliverer_sets_no_timer_to_write_its_log(settings: Settings) -> None:
    """Results are written in batches, a moment after they come in: the writer waits for a result rather
    than waking every 20 ms to look (50 wake-ups a second, each a slice of an otherwise idle CPU)."""
    delivering = Platform(settings)
    await delivering.start()
    loop = asyncio.get_running_loop()
    timers: list[str] = []
    call_at = loop.call_at

    def counting(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        task = asyncio.current_task()
        timers.append(task.get_name() if task else "")
        return call_at(when, callback, *args, **kwargs)

    try:
        await asyncio.sleep(0.2)  # started: every task settled into its wait
        loop.call_at = counting  # type: ignore[method-assign]
        try:
            await asyncio.sleep(0.5)
        finally:
            del loop.call_at  # the class's own again
    finally:
        await delivering.stop()

    assert "webhooks.flush" not in timers
    assert timers  # the counting did see the loop's timers (this test's own sleep, at least)
