"""Waiting in async tests for what a live server does in the background."""

from __future__ import annotations

import asyncio

from echo_core.stream.session import StreamSession


async def wait_ingested(session: StreamSession, chunks: int = 1, timeout_s: float = 15.0) -> None:
    """Until `session` has ingested `chunks` 2-s chunks (fails the test after `timeout_s`)."""
    for _ in range(int(timeout_s / 0.05)):
        if session.stats.chunks_ingested >= chunks:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"{session.stats.chunks_ingested} chunks ingested after {timeout_s} s, wanted {chunks}"
    )
