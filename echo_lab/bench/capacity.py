"""`echo-bench capacity`: how many real-time streams one engine keeps up with.

Engine only (no network, no decoding): N synthetic streams (random frames at 2 fps, the
model's rate, and 16-kHz audio in 100-ms packets) are pushed in real time into N sessions of
one `Scheduler`, and one thread runs the engine's loop, as `server.engine.EngineWorker`
does: a batched ingest step over every session, then the questions that are due. Each
stream asks a question every `ask_every_s` seconds (staggered across streams), answered
over its whole cache and the tail.

Per N: ingest lag (seconds of pushed media not yet cached, per stream after every loop turn,
weighted by the turn's length so that slow turns count for the time they take; one stream's
lag is ~2.5 s by design: a 2-s chunk closes 0.5 s after its end), p50/p95/max; TTFT p50/p95,
from when the question was due (so time spent waiting for an ingest step counts); chunks
dropped because the encoders fell behind; and where the engine thread's time went:
chunking (draining queues into chunkers), encoders, ingest sieve, KV append, answers, tails
encoded ahead in spare time (`warm_tail`), idle.
N doubles until a step fails; `max_streams` is the largest N whose lag p95 is within
`lag_margin_s` of one stream's and whose TTFT p95 ≤ `ttft_limit_ms`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from echo_core.config import StreamConfig
from echo_core.errors import EmptyAVError
from echo_core.stream.frames import AudioPacket, VideoFrame
from echo_core.stream.runtime import StreamModel
from echo_core.stream.scheduler import Scheduler
from echo_core.stream.session import StreamSession

QUESTION = "what colour was the shape when the tone played"
PACKET_S = 0.1
RATE = 16000
FPS = 2.0
PARTS = ("chunking", "encoders", "sieve", "kv_append", "answers", "warm_tail", "push", "idle")


def pct(values: list[float], q: float, digits: int = 3, weights: list[float] | None = None) -> float | None:
    """The q-th percentile (0..100) of `values` (each counted `weights` times), rounded; None if empty."""
    if not values:
        return None
    if weights is None:
        return round(float(np.percentile(values, q)), digits)
    order = np.argsort(values)
    cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    at = int(np.searchsorted(cum, q / 100 * cum[-1]))
    return round(float(np.asarray(values)[order][min(at, len(values) - 1)]), digits)


@dataclass
class _Run:
    lags: list[float] = field(default_factory=list)
    lag_weights: list[float] = field(default_factory=list)  # seconds each lag sample stands for
    ttfts: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))


def _sync(model: StreamModel) -> None:
    if model.backend.device.type == "cuda":
        torch.cuda.synchronize(model.backend.device)


def run_streams(
    model: StreamModel,
    n: int,
    *,
    seconds: float,
    image: int,
    config: StreamConfig,
    ask_every_s: float,
    max_batch: int,
    seed: int = 0,
) -> dict[str, object]:
    """Stream `n` synthetic streams in real time for `seconds`; lag, TTFT and the time split."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (image, image, 3), dtype=np.uint8) for _ in range(8)]
    packets = [(0.1 * rng.standard_normal(round(PACKET_S * RATE))).astype(np.float32) for _ in range(8)]
    scheduler = Scheduler(model, max_batch=max_batch)
    sessions = [StreamSession(model, config, session_id=f"s{i}") for i in range(n)]
    for s in sessions:
        scheduler.add(s)
    run = _Run()
    next_frame = [0] * n
    next_packet = [0] * n
    next_ask = [ask_every_s * (1 + i / n) for i in range(n)]  # staggered, first after one period
    start = time.perf_counter()
    while True:
        now = time.perf_counter() - start
        if now >= seconds:
            break
        t0 = time.perf_counter()
        for i, s in enumerate(sessions):  # media due by now (stream time = wall time since start)
            while next_frame[i] / FPS <= now:
                s.push_video(VideoFrame(next_frame[i] / FPS, frames[next_frame[i] % len(frames)]))
                next_frame[i] += 1
            while (next_packet[i] + 1) * PACKET_S <= now:
                pcm = packets[next_packet[i] % len(packets)]
                s.push_audio(AudioPacket(next_packet[i] * PACKET_S, pcm, RATE))
                next_packet[i] += 1
            s.mark_time(now)
        t1 = time.perf_counter()
        for s in sessions:
            s.drain()
        requests, owners = scheduler.gather(sessions)
        t2 = time.perf_counter()
        if requests:
            encoded = model.encode_chunks([r.chunk for r in requests])
            _sync(model)
            t3 = time.perf_counter()
            prepared = model.sieve_chunks(requests, encoded)
            _sync(model)
            t4 = time.perf_counter()
            for owner, p in zip(owners, prepared, strict=True):
                owner.append_chunk(p)
            _sync(model)
            t5 = time.perf_counter()
        else:
            t3 = t4 = t5 = t2
        answered = False
        for i, s in enumerate(sessions):
            due = next_ask[i]
            if due > time.perf_counter() - start:
                continue
            next_ask[i] += ask_every_s
            asked = time.perf_counter()
            try:
                answer = s.ask(QUESTION).result()
            except EmptyAVError:
                continue
            run.ttfts.append(1000 * (asked - start - due) + answer.ttft_ms)
            answered = True
        t6 = time.perf_counter()
        # Spare time: a tail encoded ahead of its session's next question, as the engine does.
        warmed = not requests and not answered and scheduler.warm_tail()
        if warmed:
            _sync(model)
        t7 = time.perf_counter()
        for s in sessions:  # the lag now stands for this whole loop turn (weighted by its length)
            run.lags.append(s.ingest_lag_s)
            run.lag_weights.append(t7 - t0)
        sec = run.seconds
        sec["push"] += t1 - t0
        sec["chunking"] += t2 - t1
        sec["encoders"] += t3 - t2
        sec["sieve"] += t4 - t3
        sec["kv_append"] += t5 - t4
        sec["answers"] += t6 - t5
        sec["warm_tail"] += t7 - t6
        if not requests and not answered and not warmed:
            idle = min(0.01, max(0.0, seconds - (time.perf_counter() - start)))
            time.sleep(idle)
            sec["idle"] += idle
    wall = time.perf_counter() - start
    dropped = sum(s.stats.chunks_dropped for s in sessions)
    return {
        "streams": n,
        "lag_p50_s": pct(run.lags, 50, weights=run.lag_weights),
        "lag_p95_s": pct(run.lags, 95, weights=run.lag_weights),
        "lag_max_s": round(max(run.lags), 3) if run.lags else None,
        "ttft_p50_ms": pct(run.ttfts, 50, 1),
        "ttft_p95_ms": pct(run.ttfts, 95, 1),
        "questions": len(run.ttfts),
        "chunks_ingested": sum(s.stats.chunks_ingested for s in sessions),
        "chunks_dropped": dropped,
        "time_share": {k: round(v / wall, 4) for k, v in run.seconds.items()},
    }


def run_capacity(
    model: StreamModel,
    *,
    preset: str,
    streams: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
    seconds: float = 20.0,
    image: int = 224,
    keep: float = 0.1,
    cache_budget: int = 2048,
    ask_every_s: float = 5.0,
    answer_tokens: int = 8,
    max_batch: int = 16,
    lag_margin_s: float = 1.0,
    ttft_limit_ms: float = 2000.0,
    tail_warm_s: float | None = StreamConfig.tail_warm_s,
) -> dict[str, object]:
    """Step N through `streams` until a step fails the lag or TTFT bound; returns the JSON report."""
    config = StreamConfig(
        cache_budget=cache_budget,
        keep=keep,
        max_new_tokens=answer_tokens,
        video_queue=64,
        audio_queue=400,
        tail_warm_s=tail_warm_s,
    )
    warm = StreamSession(model, config)  # encoders and sieve once before timing
    rng = np.random.default_rng(1)
    warm.push_video(VideoFrame(0.0, rng.integers(0, 256, (image, image, 3), dtype=np.uint8)))
    warm.push_audio(AudioPacket(0.0, rng.standard_normal(32000).astype(np.float32) * 0.1, RATE))
    warm.process(flush=True)
    rows: list[dict[str, object]] = []
    best: int | None = None
    baseline_lag: float | None = None
    first_behind: dict[str, object] | None = None
    for n in streams:
        row = run_streams(
            model,
            n,
            seconds=seconds,
            image=image,
            config=config,
            ask_every_s=ask_every_s,
            max_batch=max_batch,
        )
        if baseline_lag is None:
            baseline_lag = float(row["lag_p95_s"] or 0.0)  # type: ignore[arg-type]
        lag_ok = row["lag_p95_s"] is not None and float(row["lag_p95_s"]) <= baseline_lag + lag_margin_s  # type: ignore[arg-type]
        ttft = row["ttft_p95_ms"]
        ttft_ok = ttft is not None and float(ttft) <= ttft_limit_ms  # type: ignore[arg-type]
        row["keeps_up"] = bool(lag_ok and ttft_ok and not row["chunks_dropped"])
        rows.append(row)
        if not row["keeps_up"]:
            first_behind = row
            break
        best = n
    device = model.backend.device
    return {
        "preset": preset,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": str(model.backend.dtype).removeprefix("torch."),
        "image": image,
        "keep": keep,
        "cache_budget": cache_budget,
        "seconds_per_step": seconds,
        "ask_every_s": ask_every_s,
        "answer_tokens": answer_tokens,
        "tail_warm_s": tail_warm_s,
        "lag_margin_s": lag_margin_s,
        "ttft_limit_ms": ttft_limit_ms,
        "baseline_lag_p95_s": baseline_lag,
        "max_streams": best,
        "first_behind": None if first_behind is None else first_behind["streams"],
        # where the engine thread's time went at the first N that fell behind (else at the largest N)
        "profile": (first_behind or rows[-1])["time_share"],
        "rows": rows,
    }
