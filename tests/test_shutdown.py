"""Shutdown steps with deadlines (`server/shutdown.py`): a stuck step is left behind, logged."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from server.shutdown import within

pytestmark = pytest.mark.unit


@pytest.mark.asyncio
async def test_a_step_that_finishes_in_time_counts_and_a_failing_one_raises() -> None:
    assert await within(asyncio.sleep(0.01), "a quick step", 1.0)

    async def fails() -> None:
        raise RuntimeError("the store said no")

    with pytest.raises(RuntimeError, match="said no"):
        await within(fails(), "a failing step", 1.0)


@pytest.mark.asyncio
async def test_a_stuck_step_is_left_behind(caplog: pytest.LogCaptureFixture) -> None:
    """Even one that ignores cancellation."""
    released = asyncio.Event()

    async def stubborn() -> None:  # like a close that swallows CancelledError and waits on
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                continue

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="server.shutdown"):
        assert not await within(stubborn(), "closing session s1", 0.2)
    assert time.monotonic() - started < 1.0
    assert "closing session s1 did not finish within 0.2 s" in caplog.text
    released.set()  # let the abandoned step end before the loop closes
    await asyncio.sleep(0.01)
