"""`echo-bench soak`: a gateway and two workers under rolling sessions for `minutes`.

`concurrent` clients on the gateway each stream a looped synthetic clip for
`session_seconds`, asking a question every 5 s, then leave and a new one takes their place.
Every `sample_s` seconds the report records each process's resident memory and every
session's cache size against its budget (from the workers' /metrics). RSS growth is measured
from the end of the warm-up (the first `warmup_share` of the run) to the end.

The cache budget defaults to 96 tokens, well below the cluster config's 1024, so that
every session fills its cache within its life and the run exercises eviction, not just
growth.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from .fleet import FLEET_KEY, Fleet, fleet, rss_mib
from .streams import StreamStats, clip_files, percentile, streaming_session


async def cache_sizes(url: str) -> list[tuple[int, int]]:
    """(tokens, budget) of every session on a worker, from its /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        text = await r.text()
    tokens: dict[str, int] = {}
    budgets: dict[str, int] = {}
    for line in text.splitlines():
        for name, into in (("echo_cache_tokens{", tokens), ("echo_cache_budget{", budgets)):
            if line.startswith(name):
                session = line[line.index('"') + 1 : line.rindex('"')]
                into[session] = int(float(line.split()[-1]))
    return [(tokens[s], budgets[s]) for s in tokens if s in budgets]


async def sample(f: Fleet, started: float) -> dict[str, Any]:
    caches = {name: await cache_sizes(node.url) for name, node in f.workers.items()}
    return {
        "t_s": round(time.monotonic() - started, 1),
        "rss_mib": {node.name: round(rss_mib(node.proc.pid), 1) for node in f.nodes},
        "cache_tokens": {name: [t for t, _ in c] for name, c in caches.items()},
        "cache_over_budget": sum(t > b for c in caches.values() for t, b in c),
    }


async def run_soak(
    minutes: float,
    concurrent: int = 2,
    session_seconds: float = 45.0,
    sample_s: float = 10.0,
    warmup_share: float = 0.2,
    cache_budget: int = 96,
) -> dict[str, Any]:
    key = FLEET_KEY
    stats: list[StreamStats] = []
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="echo-soak-") as tmp:
        clips = clip_files(8, Path(tmp))
        async with fleet(
            2,
            f"server.max_sessions_per_key={4 * concurrent}",
            "server.questions_per_minute=100000",
            f"stream.cache_budget={cache_budget}",
        ) as f:
            started = time.monotonic()
            end = started + minutes * 60

            async def rolling(slot: int) -> None:
                turn = 0
                while time.monotonic() + 10 < end:
                    s = StreamStats()
                    stats.append(s)
                    life = min(session_seconds, end - time.monotonic() - 4)
                    clip = clips[(slot + turn * concurrent) % len(clips)]
                    await streaming_session(f.gateway.url, key, clip, life, 5.0, 4.0, s)
                    turn += 1

            async def sampler() -> None:
                while time.monotonic() < end:
                    samples.append(await sample(f, started))
                    await asyncio.sleep(sample_s)

            await asyncio.gather(sampler(), *(rolling(i) for i in range(concurrent)))
            samples.append(await sample(f, started))
    warm = next(s for s in samples if s["t_s"] >= warmup_share * minutes * 60)
    last = samples[-1]
    growth = {
        name: round(100 * (last["rss_mib"][name] - warm["rss_mib"][name]) / warm["rss_mib"][name], 2)
        for name in last["rss_mib"]
    }
    ttft = [x for s in stats for x in s.ttft_ms]
    return {
        "benchmark": "soak",
        "minutes": minutes,
        "concurrent": concurrent,
        "session_seconds": session_seconds,
        "sessions": len(stats),
        "answers": sum(s.answers for s in stats),
        "errors": sum(len(s.errors) for s in stats),
        "error_codes": sorted({e for s in stats for e in s.errors}),
        "ttft_p50_ms": percentile(ttft, 50),
        "ttft_p95_ms": percentile(ttft, 95),
        "warmup_end_s": warm["t_s"],
        "rss_growth_after_warmup_pct": growth,
        "max_cache_tokens": max(
            (t for s in samples for c in s["cache_tokens"].values() for t in c), default=0
        ),
        "cache_budget": cache_budget,
        "cache_over_budget_samples": sum(s["cache_over_budget"] for s in samples),
        "samples": samples,
    }
