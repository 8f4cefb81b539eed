"""The streaming engine on a tiny random thinker: KV reuse, windows, bounds, re-basing, batching."""

from __future__ import annotations

import inspect
from dataclasses import fields

import numpy as np
import pytest
import torch

from echo_core.config import SieveConfig, StreamConfig
from echo_core.errors import ConfigError, EmptyAVError
from echo_core.model.backend import OmniBackend
from echo_core.model.positions import build_positions
from echo_core.model.rope import POSITIONS_PER_SECOND
from echo_core.model.tokens import TIME_IDS_PER_CHUNK, Modality
from echo_core.sieve import CS2
from echo_core.stream.frames import AudioPacket, MediaChunk, VideoFrame
from echo_core.stream.runtime import StreamModel
from echo_core.stream.scheduler import Scheduler
from echo_core.stream.session import StreamSession
from server.protocol import SessionSettings

pytestmark = pytest.mark.integration

SIZE = 56  # 2 × 2 merged tokens per temporal patch: 8 video + 50 audio tokens per 2-s chunk


@pytest.fixture(scope="module")
def model(backend: OmniBackend, cs2: CS2) -> StreamModel:
    return StreamModel(backend, cs2, SieveConfig(method="cs2", rope="sync", scoring="attention"))


@pytest.fixture(scope="module")
def head_model(backend: OmniBackend) -> StreamModel:
    torch.manual_seed(1)
    trained = CS2(backend.lm, n_layers=2, trained=True)  # random head: exercises the batched path
    return StreamModel(backend, trained, SieveConfig(method="cs2", rope="sync", scoring="head"))


def cfg(**changes: object) -> StreamConfig:
    """Session settings with input queues deep enough to push a whole test stream before draining."""
    return StreamConfig(**{"video_queue": 1000, "audio_queue": 10_000, "max_pending_chunks": 1000, **changes})  # type: ignore[arg-type]


def feed(session: StreamSession, start_s: float, seconds: float, seed: int = 0, size: int = SIZE) -> None:
    """Push `seconds` of 2-fps frames and 16-kHz audio (0.1-s packets) starting at `start_s`."""
    rng = np.random.default_rng(seed)
    for k in range(int(seconds * 2)):
        rgb = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        session.push_video(VideoFrame(start_s + k / 2, rgb))
    for k in range(int(seconds * 10)):
        pcm = (0.2 * rng.standard_normal(1600)).astype(np.float32)
        session.push_audio(AudioPacket(start_s + k / 10, pcm, 16000))


def chunk_order_ok(session: StreamSession) -> bool:
    chunks = session.cache.time_ids[: len(session.cache)] // TIME_IDS_PER_CHUNK
    return bool((chunks[1:] >= chunks[:-1]).all())


def test_kv_reuse_equals_fresh_prefill(model: StreamModel) -> None:
    s = StreamSession(model, cfg(cache_budget=512, keep=0.3))
    feed(s, 0.0, 6.0)
    assert s.process(flush=True) == 3
    assert s.stats.seen_audio == 150 and s.stats.seen_video == 24
    assert len(s.cache) == 3 * 18  # ceil(0.3 × 58) per chunk
    reused = s.ask("what colour", None, kv_reuse=True)
    fresh = s.ask("what colour", None, kv_reuse=False)
    diff = float((reused.first_logits - fresh.first_logits).abs().max())
    assert diff < 1e-4, diff
    a, b = reused.result(), fresh.result()
    assert a.text == b.text
    assert a.av_tokens == len(s.cache) == b.av_tokens
    assert a.kv_reuse and not b.kv_reuse
    assert a.ttft_ms <= a.total_ms


def test_window_selects_exactly_the_tokens_inside(model: StreamModel) -> None:
    s = StreamSession(model, cfg(cache_budget=512, keep=0.5))
    feed(s, 0.0, 8.0)
    s.process(flush=True)
    times = s.cache.time_ids[: len(s.cache)]
    for window in (1.0, 3.3, 5.0, 100.0):
        slots = s.window_slots(window)
        start = 8 * POSITIONS_PER_SECOND - round(window * POSITIONS_PER_SECOND)
        assert slots.tolist() == torch.nonzero(times >= start).flatten().tolist()
    answer = s.ask("what colour", 3.0).result()
    assert answer.av_tokens == len(s.window_slots(3.0))
    assert answer.window_start_s == pytest.approx(5.0) and answer.window_end_s == pytest.approx(8.0)
    with pytest.raises(EmptyAVError, match=r"last 0\.01 s"):
        s.ask("what", 0.01)
    with pytest.raises(ConfigError, match="window_s"):
        s.window_slots(-1.0)


def test_ask_sieve_reduces_tokens(model: StreamModel) -> None:
    s = StreamSession(model, cfg(cache_budget=512, keep=0.5))
    feed(s, 0.0, 4.0)
    s.process(flush=True)
    full = s.ask("what colour").result()
    sieved = s.ask("what colour", ask_budget=10).result()
    assert sieved.av_tokens == 10 < full.av_tokens
    reused = s.ask("what colour", ask_budget=10, kv_reuse=True)
    # Reference: one forward over prefix + every cached token + question, where the question
    # may only see the 10 chosen AV tokens (their states saw everything before them).
    slots = torch.arange(len(s.cache))
    tokens = s.cache.tokens(slots)
    suffix = s._suffix("what colour")
    seq = s.question_sequence(tokens, suffix)
    result = model.sieve("cs2").select(seq, budget=10)
    p_len, n = len(s.prefix_layout), len(tokens)
    chosen = result.kept[(result.kept >= p_len) & (result.kept < p_len + n)] - p_len
    # reference positions from whole fresh sequences, independent of the engine's own row code
    rows_all = build_positions(s.question_sequence(tokens, suffix).layout, model.rope)[:, : p_len + n]
    subset = s.question_sequence(tokens.select(chosen), suffix).layout
    rows_sfx = build_positions(subset, model.rope)[:, p_len + len(chosen) :]
    rows = torch.cat([rows_all, rows_sfx], dim=1)
    length = len(seq)
    mask = torch.zeros(length, length).masked_fill(
        torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf")
    )
    hidden_av = torch.ones(n, dtype=torch.bool)
    hidden_av[chosen] = False
    mask[p_len + n :, p_len : p_len + n] = mask[p_len + n :, p_len : p_len + n].masked_fill(
        hidden_av, float("-inf")
    )
    lm = model.lm
    with torch.no_grad():
        out = lm.forward(seq.embeds[None], rows, lm.split(model.rope), attention_mask=mask[None, None])
        expected = lm.logits(out.hidden[:, -1])[0].float()
    assert float((reused.first_logits - expected).abs().max()) < 1e-4
    # a fresh prefill of only the chosen tokens is a different (context-free) computation
    fresh = s.ask("what colour", ask_budget=10, kv_reuse=False)
    assert fresh.context.audio_tokens + fresh.context.video_tokens == 10


def test_cache_stays_bounded_in_order_with_coverage(model: StreamModel) -> None:
    config = cfg(cache_budget=48, keep=0.25, bucket_s=10.0, floor_share=0.5, rebase_horizon_s=600.0)
    s = StreamSession(model, config)
    for c in range(30):  # 60 s of stream, 15 tokens kept per chunk, budget 48
        feed(s, 2.0 * c, 2.0, seed=c)
        s.process()
        assert len(s.cache) <= 48
        assert chunk_order_ok(s)
    s.process(flush=True)
    assert len(s.cache) == 48
    assert s.stats.evicted_audio + s.stats.evicted_video == s.stats.kept_audio + s.stats.kept_video - 48
    # floors: ⌊0.5 × 48 / 6 buckets⌋ = 4 tokens in every 10-s bucket of the minute
    buckets = torch.bincount(s.cache.time_ids[:48] // 250, minlength=6)
    assert bool((buckets >= 4).all()), buckets.tolist()


def test_three_hour_timeline_rebases_positions(model: StreamModel) -> None:
    config = cfg(cache_budget=4096, keep=0.1, rebase_horizon_s=600.0)
    s = StreamSession(model, config)
    horizon = 600 * POSITIONS_PER_SECOND
    for minute in range(0, 181, 3):  # one 2-s chunk every 3 minutes for 3 hours
        feed(s, 60.0 * minute, 2.0, seed=minute, size=28)
        s.process(flush=True)
        assert s.base_tid is not None and s.now_tid is not None
        assert s.now_tid - s.base_tid <= horizon
        rows = s.av_rows(s.cache.tokens())
        assert int(rows.max()) <= s.origin + horizon
    assert s.stats.rebases >= 17
    assert s.now_tid == (180 * 60 + 2) * POSITIONS_PER_SECOND
    assert int(s.cache.time_ids[: len(s.cache)].min()) >= s.base_tid
    # after a re-base the KV was re-prefilled: reuse equals a fresh prefill again
    reused = s.ask("what colour", kv_reuse=True)
    fresh = s.ask("what colour", kv_reuse=False)
    assert float((reused.first_logits - fresh.first_logits).abs().max()) < 1e-4


def test_scheduler_batches_like_one_by_one(head_model: StreamModel) -> None:
    config = cfg(cache_budget=256, keep=0.2)
    alone = [StreamSession(head_model, config, session_id=f"a{i}") for i in range(3)]
    together = [StreamSession(head_model, config, session_id=f"b{i}") for i in range(3)]
    sched = Scheduler(head_model, max_batch=8)
    for i in range(3):
        feed(alone[i], 0.0, 4.0, seed=10 + i)
        feed(together[i], 0.0, 4.0, seed=10 + i)
        alone[i].process(flush=True)
        sched.add(together[i])
    assert sched.run_until_idle(flush=True) == 6
    assert sched.batches == 1
    for a, b in zip(alone, together, strict=True):
        assert len(a.cache) == len(b.cache) > 0
        assert torch.equal(a.cache.time_ids[: len(a.cache)], b.cache.time_ids[: len(b.cache)])
        assert torch.equal(a.cache.grid_w[: len(a.cache)], b.cache.grid_w[: len(b.cache)])
        assert torch.allclose(a.cache.embeds[: len(a.cache)], b.cache.embeds[: len(b.cache)], atol=1e-5)
    with pytest.raises(ConfigError, match="already scheduled"):
        sched.add(together[0])


def test_scheduler_isolates_a_failing_chunk(model: StreamModel) -> None:
    sched = Scheduler(model)
    good = StreamSession(model, cfg(cache_budget=128), session_id="good")
    bad = StreamSession(model, cfg(cache_budget=128), session_id="bad")
    sched.add(good)
    sched.add(bad)
    feed(good, 0.0, 4.0)
    broken = np.zeros((4, 56, 56, 2), dtype=np.uint8)  # two channels: the encoder rejects it
    bad._pending.append(MediaChunk(0, 0.0, 2.0, broken, np.arange(4) / 2, None))
    sched.run_until_idle(flush=True)
    assert good.stats.chunks_ingested == 2 and len(good.cache) > 0
    assert bad.stats.chunks_dropped == 1 and len(bad.cache) == 0
    assert sched.failed_chunks == 1


def test_bounded_input_queues(model: StreamModel) -> None:
    s = StreamSession(model, StreamConfig(video_queue=8, audio_queue=20, max_pending_chunks=2))
    feed(s, 0.0, 20.0)  # 40 frames, 200 packets, never drained meanwhile
    assert s.stats.video_dropped == 32 and s.stats.audio_dropped == 180
    assert s.ingest_lag_s == pytest.approx(20.0)
    s.drain(flush=True)
    assert s.pending_chunks <= 2
    s.process(flush=True)
    assert s.ingest_lag_s < 20.0
    snap = s.snapshot()
    assert snap["video_dropped"] == 32 and snap["cache_budget"] == 2048 and "chunker" in snap


def test_messy_input_keeps_time_order(model: StreamModel) -> None:
    s = StreamSession(model, cfg(cache_budget=512, keep=0.3))
    rng = np.random.default_rng(3)
    t = 0.0
    for step in range(60):
        size = (56, 56) if step < 20 else (90, 40) if step < 40 else (33, 71)  # resolution changes
        s.push_video(VideoFrame(t, rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)))
        rate, ch = (48000, 2) if step < 30 else (8000, 1)  # sample-rate and channel change
        pcm = (3000 * rng.standard_normal((rate // 10, ch))).astype(np.int16)
        s.push_audio(AudioPacket(t, pcm, rate))
        t += 0.1
        if step == 25:
            t -= 1.0  # backwards
        if step == 45:
            t += 30.0  # jump forward (gap)
        if step % 10 == 0:
            s.process()
    s.push_video(VideoFrame(float("nan"), rng.integers(0, 256, size=(56, 56, 3), dtype=np.uint8)))
    s.process(flush=True)
    assert chunk_order_ok(s)
    assert s.stats.chunks_ingested >= 3
    assert s.ask("what colour").result().av_tokens == len(s.cache)


def test_session_settings_keep_their_wire_names() -> None:
    """What `update` changes is the client's session setting of the same name, and (the sieve
    `method` aside) the `stream` config field of that name too: one name from the wire to the engine."""
    params = set(inspect.signature(StreamSession.update).parameters) - {"self"}
    assert params == {"window_s", "keep", "ask_budget", "method"}
    assert params <= {f.name for f in fields(SessionSettings)}
    assert params - {"method"} <= {f.name for f in fields(StreamConfig)}


def test_settings_and_errors(backend: OmniBackend, cs2: CS2, model: StreamModel) -> None:
    with pytest.raises(ConfigError, match="compact"):
        StreamModel(backend, cs2, SieveConfig(rope="compact"))
    with pytest.raises(ConfigError, match="fastv"):
        StreamSession(model, cfg(), method="fastv")
    s = StreamSession(model, cfg(cache_budget=64))
    with pytest.raises(EmptyAVError, match="yet"):
        s.ask("what")
    s.update(keep=0.5, window_s=4.0, method="uniform")
    assert (s.config.keep, s.config.window_s, s.method) == (0.5, 4.0, "uniform")
    s.update(ask_budget=32)  # the others stay
    assert (s.config.keep, s.config.window_s, s.config.ask_budget, s.method) == (0.5, 4.0, 32, "uniform")
    with pytest.raises(ConfigError, match=r"stream\.keep must be in \(0, 1\], got 2\.0"):
        s.update(keep=2.0, method="cs2")
    assert (s.config.keep, s.method) == (0.5, "uniform")  # a refused update changes nothing
    with pytest.raises(TypeError):
        s.update(cache_budget=5)  # type: ignore[call-arg]  # fixed at creation: not a setting
    with pytest.raises(TypeError):
        s.update(bogus=1)  # type: ignore[call-arg]
    no_kv = StreamSession(model, cfg(kv_reuse=False))
    feed(no_kv, 0.0, 2.0)
    no_kv.process(flush=True)
    with pytest.raises(ConfigError, match="kv_reuse"):
        no_kv.ask("what", kv_reuse=True)
    assert no_kv.ask("what").result().kv_reuse is False
    assert no_kv.cache.count(Modality.AUDIO) > 0


def test_buffered_layer_appends_in_place_and_grows() -> None:
    from echo_core.stream.kv import BufferedLayer

    k = torch.zeros(1, 2, 5, 4)
    k[0, :, :3] = 1.0
    layer = BufferedLayer(k, k.clone(), used=3)
    assert layer.get_seq_length() == 3
    keys, _ = layer.update(torch.full((1, 2, 2, 4), 2.0), torch.full((1, 2, 2, 4), 2.0))
    assert keys.shape[-2] == 5 and keys.data_ptr() == k.data_ptr()  # written in place
    keys, values = layer.update(torch.full((1, 2, 4, 4), 3.0), torch.full((1, 2, 4, 4), 3.0))
    assert keys.shape[-2] == 9 and layer.get_seq_length() == 9  # grew past the buffer
    assert keys[0, 0, :, 0].tolist() == [1, 1, 1, 2, 2, 3, 3, 3, 3]
    assert torch.equal(keys, values)


def test_window_ends_at_the_last_media_of_a_short_final_chunk(model: StreamModel) -> None:
    s = StreamSession(model, cfg(cache_budget=512, keep=1.0))
    feed(s, 0.0, 3.0)  # chunk 1 holds only [2, 3) s when flushed
    s.process(flush=True)
    assert s.now_tid == 3 * POSITIONS_PER_SECOND and s.stats.ingested_until_s == pytest.approx(3.0)
    slots = s.window_slots(1.0)
    assert int(s.cache.time_ids[slots].min()) == 2 * POSITIONS_PER_SECOND
    assert s.ingest_lag_s == pytest.approx(0.0)


def test_a_few_ms_of_audio_in_the_last_chunk_are_ignored(model: StreamModel) -> None:
    s = StreamSession(model, cfg(cache_budget=512, keep=1.0))
    feed(s, 0.0, 2.0)
    s.push_audio(AudioPacket(2.0, np.zeros(45, dtype=np.float32), 16000))  # 3 ms past the chunk
    assert s.process(flush=True) == 2
    assert s.stats.chunks_dropped == 0 and s.stats.seen_audio == 50


def test_kept_layout_reports_the_full_frame_grid(model: StreamModel) -> None:
    """The grid is the newest frame's, not the span of the few kept patches."""
    s = StreamSession(model, cfg(cache_budget=512, keep=0.05))
    feed(s, 0.0, 4.0, size=112)  # 4 × 4 merged patches per temporal patch
    s.process(flush=True)
    audio_times, patches, grid = s.kept_layout(10.0)
    assert grid == [4, 4]
    assert 0 < len(patches) < 16 and all(0 <= h < 4 and 0 <= w < 4 for _, h, w in patches)
    assert all(0.0 <= t <= 4.0 for t in audio_times)
    audio, video = s.cache_counts()
    assert audio + video == len(s.cache) and video >= len(patches) and audio >= len(audio_times)


def test_question_sits_after_the_streams_now_whatever_was_kept(model: StreamModel) -> None:
    """The reference rule, by hand: 3 chunks (6 s) ingested, so the stream's now is time id 150
    and the question's first position is origin + 150, even when the newest chunk's tokens
    are left out of the window given to the prefill."""
    s = StreamSession(model, cfg(cache_budget=512, keep=0.2, ask_tail=False))
    feed(s, 0.0, 6.0)
    s.process(flush=True)
    assert s.now_tid == 150 and s.base_tid == 0
    tokens = s.cache.tokens(torch.arange(len(s.cache)))
    early = tokens.select(torch.nonzero(tokens.time_ids < 50).flatten())  # the first chunk only
    assert int(early.time_ids.max()) < 50
    assert s.question_start(early, 0, 150) == s.origin + 150
    suffix = s._suffix("what colour")
    rows = build_positions(s.question_sequence(early, suffix).layout, model.rope)
    assert int(rows[0, -len(suffix)]) == s.origin + 150  # the fresh-prefill path agrees


def test_kv_store_in_bfloat16_halves_the_cache_and_keeps_the_answer(model: StreamModel) -> None:
    """A float32 model with `kv_dtype: bfloat16`: the store holds bfloat16 keys/values (half the
    bytes) and answers stay within bfloat16 rounding of the float32 store's, over every slot
    (read in place), over a window (a private copy) and across evictions (compaction)."""
    stores = {}
    for kv_dtype in (None, "bfloat16"):
        s = StreamSession(model, cfg(cache_budget=40, keep=0.3, kv_dtype=kv_dtype))
        feed(s, 0.0, 8.0)
        assert s.process(flush=True) == 4  # 4 × 18 tokens into a budget of 40: evictions ran
        stores[kv_dtype] = s
    full, half = stores[None], stores["bfloat16"]
    assert full.kv is not None and half.kv is not None
    assert (full.kv.keys.dtype, half.kv.keys.dtype) == (torch.float32, torch.bfloat16)
    assert half.kv.nbytes * 2 == full.kv.nbytes
    assert torch.equal(full.cache.time_ids[: len(full.cache)], half.cache.time_ids[: len(half.cache)])
    for window in (None, 4.0):
        a = full.ask("what colour", window, kv_reuse=True)
        b = half.ask("what colour", window, kv_reuse=True)
        scale = float(a.first_logits.abs().max())
        diff = float((a.first_logits - b.first_logits).abs().max())
        assert 0 < diff < 0.02 * scale, (diff, scale)  # rounded, not equal, and close
        assert a.result().text == b.result().text
        assert b.result().kv_reuse
    with pytest.raises(ConfigError, match="kv_dtype"):
        cfg(kv_dtype="int8")
