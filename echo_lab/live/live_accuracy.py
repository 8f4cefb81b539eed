"""`echo-bench live-accuracy`: end-to-end answer accuracy of a live server over streamed clips.

Starts echo-server (configs/demo.yaml by default) in its own process, streams `clips`
synthetic test clips as WebM (VP8 + Opus) over real WebRTC in real time, `concurrency`
sessions at a time, asks every question each clip determines at the end of its stream, and
writes per-family accuracy (first answer word vs the truth) with TTFT and token usage.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import defaultdict
from pathlib import Path

from echo_lab.world import Clip, iter_clips
from echo_lab.world.questions import Question
from server.config import load_service_config

from ..launch.local_server import local_server
from .demo import Asked, stream_and_ask


async def run_live_accuracy(
    config_path: Path, clips: int, concurrency: int, families: frozenset[str] | None = None
) -> dict[str, object]:
    """Stream the first `clips` test clips that ask a question of `families` (all when None)."""
    config = load_service_config(config_path)
    key = config.server.api_keys[0]

    def asked(clip: Clip) -> list[Question]:
        return [q for q in clip.questions if families is None or q.family in families]

    all_clips = list(itertools.islice((c for c in iter_clips("test", 0, 100 * clips) if asked(c)), clips))
    results: list[Asked] = []
    started = time.monotonic()
    async with local_server(
        config_path,
        f"server.max_sessions_per_key={clips + concurrency}",
        "server.questions_per_minute=1000",
    ) as url:
        gate = asyncio.Semaphore(concurrency)

        async def one(clip: Clip) -> None:
            async with gate:
                answers, _ = await stream_and_ask(url, key, clip, asked(clip))
                results.extend(answers)

        await asyncio.gather(*(one(c) for c in all_clips))
    by_family: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for a in results:
        by_family[a.family][0] += int(a.correct)
        by_family[a.family][1] += 1
    ttft = [a.usage.ttft_ms for a in results]
    return {
        "config": config_path.name,
        "clips": len(all_clips),
        "families": sorted(families) if families else "all",
        "concurrency": concurrency,
        "questions": len(results),
        "accuracy": sum(a.correct for a in results) / max(1, len(results)),
        "by_family": {f: c / n for f, (c, n) in sorted(by_family.items())},
        "ttft_ms_p50": statistics.median(ttft) if ttft else None,
        "av_tokens_mean": statistics.fmean(float(a.usage.av_tokens) for a in results) if results else None,
        "wall_s": round(time.monotonic() - started, 1),
    }
