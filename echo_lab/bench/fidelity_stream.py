"""`echo-bench fidelity --streaming`: the same questions, answered by the live engine.

Each clip is pushed as a live stream (frames at their times, audio in 100-ms packets)
through a session's chunker; the closed 2-s chunks are encoded once and then, for every
(method, rope, keep) row, ingest-sieved chunk by chunk without the question into a fresh
session whose bounded cache holds `cache_seconds` of kept tokens (evicting beyond), and
every question is asked at the end of the clip over all retained history with KV reuse.
With `ingest_factor` F > 1 the ingest sieve keeps min(1, F × keep) of each chunk and the
question re-sieves the cache (query-aware) down to 1/F of it, so the LLM still sees
`keep` of the stream's tokens, picked in two stages. `kv_dtype` sets the sessions' KV store
(`stream.kv_dtype`; None: the model's dtype).
The greedy first answer token is scored as in the offline benchmark.
"""

from __future__ import annotations

import math
from dataclasses import replace

from tqdm import tqdm

from echo_core.config import StreamConfig
from echo_core.sieve import METHODS
from echo_core.stream.frames import AudioPacket, MediaChunk, VideoFrame
from echo_core.stream.runtime import EncodedChunk, IngestRequest, StreamModel
from echo_core.stream.session import StreamSession

from ..world import FAMILIES, Clip, iter_clips
from .fidelity import DEFAULT_KEEPS, OTHER_ROPES, Tally, method_labels, plan

PACKET_S = 0.1
STREAM_ROPES = OTHER_ROPES  # compact cannot position a stream chunk by chunk


def stream_plan(
    methods: list[str], keeps: list[float], ropes: list[str] | None
) -> list[tuple[str, str, float]]:
    """The offline plan without what cannot stream (FastV, compact)."""
    allowed = [r for r in STREAM_ROPES if ropes is None or r in ropes]
    return plan([m for m in methods if m != "fastv"], keeps, allowed)


def clip_chunks(model: StreamModel, clip: Clip) -> list[MediaChunk]:
    """Push `clip` as a live stream through a session's input path; the closed chunks."""
    session = StreamSession(
        model, StreamConfig(video_queue=10_000, audio_queue=10_000, max_pending_chunks=10_000)
    )
    for t, rgb in zip(clip.frame_times, clip.frames, strict=True):
        session.push_video(VideoFrame(float(t), rgb))
    step = round(PACKET_S * 16000)
    for start in range(0, len(clip.audio), step):
        session.push_audio(AudioPacket(start / 16000, clip.audio[start : start + step], 16000))
    session.drain(flush=True)
    return [r.chunk for r in session.take_requests()]


def cache_budget(encoded: list[EncodedChunk], keep: float, cache_seconds: float) -> int:
    """Tokens of `cache_seconds` of this clip's media at `keep` (at least one chunk's worth)."""
    per_chunk = max(len(e.absolute) for e in encoded)
    return math.ceil(keep * per_chunk - 1e-9) * max(1, math.ceil(cache_seconds / 2))


def run_streaming_fidelity(
    model: StreamModel,
    *,
    split: str,
    limit: int,
    methods: list[str] | None = None,
    keeps: list[float] | None = None,
    ropes: list[str] | None = None,
    cache_seconds: float = 16.0,
    ingest_factor: float = 1.0,
    kv_dtype: str | None = None,
    model_name: str = "echo-tiny",
    progress: bool = True,
) -> dict[str, object]:
    """Evaluate the planned rows through the streaming engine; returns the JSON report."""
    rows = stream_plan(methods or list(METHODS), list(keeps or DEFAULT_KEEPS), ropes)
    models = {
        rope: StreamModel(model.backend, model.cs2, replace(model.sieve_config, rope=rope))
        for rope in {r for _, r, _ in rows}
    }
    tallies = {row: Tally() for row in rows}
    n_questions = 0
    evictions = 0
    for clip in tqdm(
        iter_clips(split, 0, limit), total=limit, desc=f"fidelity-stream/{split}", disable=not progress
    ):
        chunks = clip_chunks(model, clip)
        encoded = model.encode_chunks(chunks)
        n_a, n_v = clip.spec.n_audio_events, clip.spec.n_video_events
        event_share = n_a / max(1, n_a + n_v)
        n_questions += len(clip.questions)
        for method, rope, keep in rows:
            m = models[rope]
            ingest_keep = min(1.0, keep * ingest_factor)
            ask_keep = keep / ingest_keep if ingest_keep > keep else None
            budget = cache_budget(encoded, ingest_keep, cache_seconds)
            config = StreamConfig(cache_budget=budget, keep=ingest_keep, ask_keep=ask_keep, kv_dtype=kv_dtype)
            session = StreamSession(m, config, method=method)
            requests = [IngestRequest(c, method, ingest_keep) for c in chunks]
            for prepared in m.sieve_chunks(requests, encoded):
                session.append_chunk(prepared)
            st = session.stats
            evictions += st.evicted_audio + st.evicted_video
            for q in clip.questions:
                stream = session.ask(q.text)
                word = str(m.backend.tokenizer.decode([int(stream.first_logits.argmax())])).strip()
                answer = stream.context
                tallies[(method, rope, keep)].add_counts(
                    q.family,
                    word == q.answer,
                    n_audio=st.seen_audio,
                    n_video=st.seen_video,
                    kept_audio=answer.audio_tokens,
                    kept_video=answer.video_tokens,
                    audio_event_share=event_share,
                )
    out_rows = [t.row(m, rope, keep) | method_labels(m, model.cs2) for (m, rope, keep), t in tallies.items()]
    return {
        "model": model_name,
        "mode": "streaming",
        "split": split,
        "n": n_questions,
        "n_clips": limit,
        "cache_seconds": cache_seconds,
        "ingest_factor": ingest_factor,
        "kv_dtype": kv_dtype or str(model.backend.dtype).removeprefix("torch."),
        "evicted_tokens": evictions,
        "families": list(FAMILIES),
        "rows": out_rows,
    }
