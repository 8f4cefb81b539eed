"""Clients that stream a looped synthetic clip and ask about it, timing what they see."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from client.echo_client import ClientError, EchoClient
from echo_lab.world import make_clip
from echo_lab.world.containers import write_webm

QUESTIONS = ("what colour is the shape", "what sound is playing", "how many shapes are there")


def clip_files(count: int, directory: Path) -> list[Path]:
    """`count` synthetic test clips written as WebM (VP8 + Opus), one per session."""
    return [write_webm(make_clip("test", i), directory / f"clip{i}.webm") for i in range(count)]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class StreamStats:
    """What one streaming client measured."""

    lags_s: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    answers: int = 0
    errors: list[str] = field(default_factory=list)
    cache_over_budget: int = 0


async def timed_ask(client: EchoClient, question: str, stats: StreamStats) -> None:
    """Ask one question; record the client-side time to the first text (or to the end)."""
    started = time.monotonic()
    first: float | None = None
    try:
        async for _ in client.ask(question):
            first = first or time.monotonic()
        stats.ttft_ms.append(((first or time.monotonic()) - started) * 1000)
        stats.answers += 1
    except (ClientError, TimeoutError) as exc:
        stats.errors.append(getattr(exc, "code", "timeout"))


def sample_stats(client: EchoClient, stats: StreamStats) -> None:
    """Record the session's ingest lag and check its cache against the budget (window.stats)."""
    s = client.last_stats
    if s is None:
        return
    stats.lags_s.append(s.ingest_lag_s)
    if s.cache_audio + s.cache_video > s.cache_budget:
        stats.cache_over_budget += 1


async def streaming_session(
    url: str,
    api_key: str,
    clip: Path,
    seconds: float,
    ask_every_s: float,
    warmup_s: float,
    stats: StreamStats,
) -> None:
    """Connect, stream `clip` in a loop for `warmup_s + seconds`, asking every `ask_every_s` after warm-up."""
    try:
        async with EchoClient(url, api_key) as client:
            await client.stream_file(str(clip), loop=True)
            await asyncio.sleep(warmup_s)
            end, turn = time.monotonic() + seconds, 0
            next_ask = time.monotonic()
            while time.monotonic() < end:
                sample_stats(client, stats)
                if time.monotonic() >= next_ask:
                    await timed_ask(client, QUESTIONS[turn % len(QUESTIONS)], stats)
                    turn += 1
                    next_ask += ask_every_s
                await asyncio.sleep(0.5)
    except ClientError as exc:
        stats.errors.append(exc.code)
