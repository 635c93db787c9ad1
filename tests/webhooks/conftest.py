"""Fixtures of the webhook tests: a receiver on loopback, a server that never answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.webhooks.receiver import Receiver, SilentServer


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as found:
        yield found


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    async with SilentServer() as found:
        yield found
