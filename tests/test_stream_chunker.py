"""ChunkAssembler: live frames and packets → aligned 2-s chunks, with hand-computed expectations."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from echo_core.errors import ConfigError
from echo_core.model.media import resize_frames, to_mono_16k
from echo_core.stream.chunker import ChunkAssembler, ChunkerStats
from echo_core.stream.frames import AudioPacket, MediaChunk, VideoFrame

pytestmark = pytest.mark.unit

SR = 16000
N = 32000  # samples per 2-s chunk


def _rgb(value: int, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    return np.full((*size, 3), value % 256, dtype=np.uint8)


def _tone(t0: float, n: int, rate: int = SR, freq: float = 220.0) -> np.ndarray:
    """0.5 · sin(2π f t) sampled at `rate` from stream time t0: [n] float64."""
    return 0.5 * np.sin(2 * np.pi * freq * (t0 + np.arange(n) / rate))


def _packet(t0: float, seconds: float = 0.1) -> AudioPacket:
    """16-kHz mono float32 packet of the 220-Hz tone, continuous in absolute time."""
    return AudioPacket(t0, _tone(t0, round(seconds * SR)).astype(np.float32), SR)


def _packets(t0: float, t1: float, seconds: float = 0.1) -> list[AudioPacket]:
    return [_packet(t0 + k * seconds, seconds) for k in range(round((t1 - t0) / seconds))]


def _frames(t0: float, t1: float, fps: float = 2.0, first_value: int = 0) -> list[VideoFrame]:
    return [VideoFrame(t0 + k / fps, _rgb(first_value + k)) for k in range(round((t1 - t0) * fps))]


def _push(asm: ChunkAssembler, items: Sequence[VideoFrame | AudioPacket]) -> list[MediaChunk]:
    out: list[MediaChunk] = []
    for item in items:
        out += asm.push_video(item) if isinstance(item, VideoFrame) else asm.push_audio(item)
    return out


def _by_time(*streams: Sequence[VideoFrame | AudioPacket]) -> list[VideoFrame | AudioPacket]:
    return sorted((x for s in streams for x in s), key=lambda x: x.t_s)  # stable: ties keep order


def _assert_increasing(chunks: list[MediaChunk]) -> None:
    idx = [c.index for c in chunks]
    assert idx == sorted(set(idx)), idx


def _tone_16k(t0: float) -> np.ndarray:
    return _tone(t0, N).astype(np.float32)


# ---------------------------------------------------------------- the main path


def _av_30fps_48k() -> tuple[list[VideoFrame | AudioPacket], np.ndarray]:
    """6 s of 30-fps frames (pixel value = frame number) and 48-kHz stereo int16 in 20-ms packets."""
    rate, n = 48000, 6 * 48000
    t = np.arange(n) / rate
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)], axis=1)
    pcm = np.round(stereo * 32767).astype(np.int16)  # [n, 2]
    video: list[VideoFrame | AudioPacket] = [VideoFrame(k / 30, _rgb(k, (40, 56))) for k in range(180)]
    audio: list[VideoFrame | AudioPacket] = [
        AudioPacket(k * 0.02, pcm[k * 960 : (k + 1) * 960], rate) for k in range(300)
    ]
    return _by_time(video, audio), pcm


def test_30fps_48k_stereo_gives_three_aligned_chunks() -> None:
    items, pcm = _av_30fps_48k()
    asm = ChunkAssembler()
    chunks = _push(asm, items) + asm.flush()
    assert [c.index for c in chunks] == [0, 1, 2]
    ref = to_mono_16k(pcm, 48000)  # [96000] whole-signal resampling
    in_packet = np.arange(N) % 320  # 16-kHz sample position inside its 20-ms packet
    for c in chunks:
        assert (c.start_s, c.duration_s) == (2.0 * c.index, 2.0)
        assert c.frames is not None and c.frame_times is not None and c.audio is not None
        assert c.frames.shape == (4, 40, 56, 3) and c.frames.dtype == np.uint8
        assert c.frame_times.dtype == np.float64
        # Slot times exactly, as a 2-fps clip sampled from 0 would have them.
        assert np.array_equal(c.frame_times, np.arange(4 * c.index, 4 * c.index + 4) / 2.0)
        # The first 30-fps frame of each 0.5-s slot is used: frame numbers 15·slot.
        assert c.frames[:, 0, 0, 0].tolist() == [15 * s for s in range(4 * c.index, 4 * c.index + 4)]
        assert c.audio.shape == (N,) and c.audio.dtype == np.float32
        diff = c.audio - ref[c.index * N : (c.index + 1) * N]
        # resample_poly zero-pads each packet, so the ~10 samples at either packet edge differ (up to
        # ~0.16 here); 960 is a multiple of the 3:1 decimation, so inside a packet the polyphase
        # filter sees the same input and the result matches the whole-signal resampling exactly.
        interior = (in_packet >= 12) & (in_packet < 308)
        assert np.abs(diff[interior]).max() < 1e-5
        assert math.sqrt(float(np.mean(diff.astype(np.float64) ** 2))) < 0.01
    s = asm.stats
    assert (s.frames_in, s.frames_used, s.frames_skipped) == (180, 12, 168)
    assert (s.audio_packets_in, s.audio_samples_late, s.audio_samples_gap_filled) == (300, 0, 0)
    assert s.chunks_out == 3 and s.frames_invalid == s.audio_invalid == s.realignments == 0


def test_chunks_come_out_as_soon_as_the_watermark_passes_end_plus_lateness() -> None:
    items, _ = _av_30fps_48k()
    for lateness, expected in ((0.5, {0: 2.48, 1: 4.48}), (1.0, {0: 2.98, 1: 4.98})):
        asm = ChunkAssembler(lateness_s=lateness)
        emitted_at: dict[int, float] = {}
        for item in items:
            got = asm.push_video(item) if isinstance(item, VideoFrame) else asm.push_audio(item)
            for c in got:
                emitted_at[c.index] = item.t_s
        # The 20-ms audio packet starting at 2.48 s moves the audio cursor to 2.5 s = chunk 0's end + 0.5.
        assert emitted_at.keys() == expected.keys()
        for index, t in expected.items():
            assert emitted_at[index] == pytest.approx(t)
        assert [c.index for c in asm.flush()] == [2]


# ---------------------------------------------------------------- video


def test_varying_fps_fills_every_slot_by_holding_frames() -> None:
    rng = np.random.default_rng(0)
    times = [k / 7 for k in range(14)] + [2.3, 3.6, 4.7, 5.2, 5.9]  # 7 fps, then about 1 fps
    inputs = {t: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for t in times}
    asm = ChunkAssembler()
    chunks = _push(asm, [VideoFrame(t, rgb) for t, rgb in inputs.items()]) + asm.flush()
    assert [c.index for c in chunks] == [0, 1, 2]
    # Slots floor(2t): 7-fps frames 0, 4, 7, 11 open slots 0..3; 2.3→4, 3.6→7, 4.7→9, 5.2→10, 5.9→11.
    expected = [
        [0 / 7, 4 / 7, 7 / 7, 11 / 7],
        [2.3, 2.3, 2.3, 3.6],  # slots 5 and 6 hold 2.3
        [4.7, 4.7, 5.2, 5.9],  # slot 8 back-fills the chunk's first frame
    ]
    for c, want in zip(chunks, expected, strict=True):
        assert c.frames is not None and c.audio is None
        assert c.frames.shape == (4, 32, 32, 3)
        for got, t in zip(c.frames, want, strict=True):
            assert np.array_equal(got, inputs[t])
    assert chunks[1].frames is not None and np.array_equal(chunks[1].frames[0], chunks[1].frames[2])
    assert (asm.stats.frames_used, asm.stats.frames_skipped) == (9, 10)


def test_accumulated_float_timestamps_land_in_their_slot() -> None:
    t, frames = 0.0, []
    for k in range(40):  # 10 fps with t += 0.1: the 10th frame sits at 0.9999999999999999 s
        frames.append(VideoFrame(t, _rgb(k)))
        t += 0.1
    asm = ChunkAssembler()
    chunks = _push(asm, list(frames)) + asm.flush()
    assert [c.index for c in chunks] == [0, 1]
    for c in chunks:
        assert c.frames is not None
        assert c.frames[:, 0, 0, 0].tolist() == [5 * s for s in range(4 * c.index, 4 * c.index + 4)]
    assert (asm.stats.frames_used, asm.stats.frames_skipped) == (8, 32)


def test_resolution_change_keeps_one_size_per_chunk() -> None:
    a_size, b_size = (64, 48), (32, 80)
    sizes = [a_size, a_size, b_size, b_size, b_size, b_size, a_size, a_size]  # slots 0..7
    rng = np.random.default_rng(1)
    inputs = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for hw in sizes]
    asm = ChunkAssembler()
    chunks = _push(asm, [VideoFrame(k / 2, rgb) for k, rgb in enumerate(inputs)]) + asm.flush()
    assert [c.index for c in chunks] == [0, 1]
    f0, f1 = chunks[0].frames, chunks[1].frames
    assert f0 is not None and f1 is not None
    assert f0.shape == (4, 64, 48, 3) and f1.shape == (4, 32, 80, 3)
    assert np.array_equal(f0[1], inputs[1])
    assert np.array_equal(f0[2], resize_frames(inputs[2][None], a_size)[0])
    assert np.array_equal(f1[0], inputs[4])
    assert np.array_equal(f1[3], resize_frames(inputs[7][None], b_size)[0])
    assert asm.stats.resolution_changes == 2  # A→B at slot 2, B→A at slot 6


def test_tiny_frames_are_scaled_up_to_28_px() -> None:
    asm = ChunkAssembler()
    wide = [VideoFrame(0.0, _rgb(1, (10, 16))), VideoFrame(0.5, _rgb(2, (10, 16)))]
    (chunk,) = _push(asm, list(wide)) + asm.flush()
    assert chunk.frames is not None
    assert chunk.frames.shape == (2, 28, 45, 3)  # 16 · 28/10 = 44.8 → 45; flushed chunk ends at slot 1
    assert chunk.frames[:, 5, 5, 0].tolist() == [1, 2]
    asm = ChunkAssembler()
    (chunk,) = asm.push_video(VideoFrame(0.0, _rgb(3, (16, 10)))) + asm.flush()
    assert chunk.frames is not None and chunk.frames.shape == (2, 45, 28, 3)


def test_flush_cuts_the_last_chunk_to_an_even_frame_count_and_its_last_sample() -> None:
    asm = ChunkAssembler()
    items = _by_time(_frames(0.0, 2.5), _packets(0.0, 2.3))  # slots 0..4; audio to 2.3 s
    chunks = _push(asm, items) + asm.flush()
    assert [c.index for c in chunks] == [0, 1]
    first, last = chunks
    assert first.frames is not None and first.frames.shape[0] == 4
    assert first.audio is not None and first.audio.shape == (N,)
    assert last.frames is not None and last.frame_times is not None and last.audio is not None
    assert last.frame_times.tolist() == [2.0, 2.5]  # slot 4 alone, held once to make a pair
    assert last.frames[:, 0, 0, 0].tolist() == [4, 4]
    assert last.audio.shape == (4800,) and last.duration_s == 2.0
    assert np.allclose(last.audio, _tone(2.0, 4800), atol=1e-6)

    asm = ChunkAssembler()
    (only,) = _push(asm, list(_frames(0.0, 1.5))) + asm.flush()  # slots 0..2 → held to 4
    assert only.frames is not None and only.frames[:, 0, 0, 0].tolist() == [0, 1, 2, 2]


# ---------------------------------------------------------------- audio


def test_sample_rate_and_channel_changes_keep_audio_continuous() -> None:
    formats = [
        (0.0, 1.0, 48000, 2, np.int16),
        (1.0, 3.0, 44100, 1, np.float32),
        (3.0, 6.0, 8000, 6, np.int16),
    ]
    packets: list[VideoFrame | AudioPacket] = []
    for t0, t1, rate, channels, dtype in formats:
        step = round(rate * 0.02)
        for k in range(round((t1 - t0) / 0.02)):
            start = t0 + k * 0.02
            wave = np.repeat(_tone(start, step, rate)[:, None], channels, axis=1)
            pcm = np.round(wave * 32767).astype(np.int16) if dtype is np.int16 else wave.astype(np.float32)
            packets.append(AudioPacket(start, pcm[:, 0] if channels == 1 else pcm, rate))
    asm = ChunkAssembler()
    chunks = _push(asm, packets) + asm.flush()
    assert [c.index for c in chunks] == [0, 1, 2]
    s = asm.stats
    assert (s.rate_changes, s.channel_changes) == (2, 2)
    assert (s.audio_samples_gap_filled, s.audio_samples_late, s.audio_invalid) == (0, 0, 0)
    in_packet = np.arange(N) % 320
    interior = (in_packet >= 20) & (in_packet < 300)  # packet edges carry per-packet resampling error
    for c in chunks:
        assert c.audio is not None and c.audio.shape == (N,) and c.frames is None
        # Every packet lands where its time says: the 16-kHz tone continues across format changes.
        assert np.abs(c.audio - _tone(2.0 * c.index, N))[interior].max() < 1e-3


def test_audio_timing_jitter_is_ignored_but_a_larger_step_is_a_gap() -> None:
    rng = np.random.default_rng(2)
    clean = _packets(0.0, 2.0)
    # The first packet fixes the cursor; later ones are up to 15 ms off it (tolerance 20 ms).
    jittered = [clean[0]] + [AudioPacket(p.t_s + rng.uniform(-0.015, 0.015), p.pcm, SR) for p in clean[1:]]
    late_step = AudioPacket(2.03, _tone(2.0, 1600).astype(np.float32), SR)  # 30 ms after the cursor
    asm = ChunkAssembler()
    chunks = _push(asm, [*jittered, late_step]) + asm.flush()
    assert [c.index for c in chunks] == [0, 1]
    assert chunks[0].audio is not None and chunks[1].audio is not None
    assert np.array_equal(chunks[0].audio, np.concatenate([p.pcm for p in clean]))  # contiguous
    assert (asm.stats.audio_samples_late, asm.stats.audio_samples_gap_filled) == (0, 480)
    assert chunks[1].audio.shape == (480 + 1600,) and not chunks[1].audio[:480].any()


def test_audio_starting_late_is_preceded_by_silence() -> None:
    asm = ChunkAssembler()
    (chunk,) = _push(asm, list(_packets(0.7, 2.0))) + asm.flush()
    assert chunk.index == 0 and chunk.frames is None and chunk.frame_times is None
    assert chunk.audio is not None and chunk.audio.shape == (N,)
    assert not chunk.audio[:11200].any()  # 0.7 s × 16 kHz of leading silence
    assert np.allclose(chunk.audio[11200:], _tone(0.7, N - 11200), atol=1e-6)
    assert asm.stats.audio_samples_gap_filled == 0  # silence before the first packet is not a gap


def test_video_only_stream_has_no_audio() -> None:
    asm = ChunkAssembler()
    chunks = _push(asm, list(_frames(0.0, 4.0))) + asm.flush()
    assert [c.index for c in chunks] == [0, 1]
    assert all(c.audio is None and c.frames is not None and c.frames.shape[0] == 4 for c in chunks)


# ---------------------------------------------------------------- messy timing


def test_three_hour_jump_is_a_gap_not_a_loop() -> None:
    jump = 3 * 3600 + 0.5  # 10800.5 s: chunk 5400, 0.5 s into it
    items = _by_time(
        _packets(0.0, 0.5),
        _packets(1.2, 2.0),  # gap [0.5, 1.2) inside chunk 0
        _frames(0.0, 2.0),
        [VideoFrame(jump, _rgb(101)), VideoFrame(jump + 0.5, _rgb(102))],
        _packets(jump, jump + 1.0),
    )
    asm = ChunkAssembler()
    begin = time.perf_counter()
    chunks: list[MediaChunk] = []
    for item in items:
        chunks += _push(asm, [item])
        assert asm.open_chunks <= 2  # nothing is kept for the 5399 skipped chunks
    chunks += _push(asm, [VideoFrame(1e8, _rgb(103))])  # ~3 years further: chunk 5e7
    chunks += asm.flush()
    assert time.perf_counter() - begin < 5.0  # a loop over 5e7 skipped chunks would take minutes
    assert [c.index for c in chunks] == [0, 5400, 50_000_000]
    first, second, third = chunks
    assert first.audio is not None and second.audio is not None and third.audio is None
    assert np.allclose(first.audio[:8000], _tone(0.0, 8000), atol=1e-6)
    assert not first.audio[8000:19200].any()  # the gap is silence
    assert np.allclose(first.audio[19200:], _tone(1.2, N - 19200), atol=1e-6)
    # Closed by the 1e8-s frame, not by flush, so it is a full chunk: silence, 1 s of tone, silence.
    assert second.start_s == 10800.0 and second.audio.shape == (N,)
    assert not second.audio[:8000].any() and not second.audio[24000:].any()
    assert np.allclose(second.audio[8000:24000], _tone(jump, 16000), atol=1e-6)
    assert second.frames is not None and second.frames[:, 0, 0, 0].tolist() == [101, 101, 102, 102]
    assert third.frames is not None and third.frames[:, 0, 0, 0].tolist() == [103, 103]
    # Gap silence inside chunks holding audio: 0.7 s in chunk 0 + 0.5 s before the packet in chunk 5400.
    assert asm.stats.audio_samples_gap_filled == 11200 + 8000


def test_small_backwards_step_is_dropped() -> None:
    asm = ChunkAssembler()
    out = _push(asm, _by_time(_frames(0.0, 2.0), _packets(0.0, 1.5)))  # slots 0..3, cursor at 1.5 s
    back = _packet(1.2, 0.5)  # 0.3 s behind: its first 4800 samples overlap written audio
    out += _push(asm, [VideoFrame(1.2, _rgb(99)), back])
    out += _push(asm, _by_time(_frames(2.0, 3.0, first_value=4), _packets(1.7, 3.0)))
    out += asm.flush()
    _assert_increasing(out)
    assert [c.index for c in out] == [0, 1]
    s = asm.stats
    assert (s.frames_backwards, s.audio_samples_late, s.realignments) == (1, 4800, 0)
    chunk = out[0]
    assert chunk.frames is not None and chunk.frames[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert chunk.audio is not None
    assert np.array_equal(chunk.audio[24000:27200], back.pcm[4800:])  # the rest continues at 1.5 s
    assert np.allclose(chunk.audio[27200:], _tone(1.7, N - 27200), atol=1e-6)


def test_clock_restart_is_realigned_and_media_continues() -> None:
    asm = ChunkAssembler()
    before = _by_time(_frames(100.0, 103.0, first_value=0), _packets(100.0, 103.0))
    after = _by_time(_frames(3.0, 6.0, first_value=6), _packets(3.0, 6.0))  # 100 s back
    out = _push(asm, before) + _push(asm, after) + asm.flush()
    _assert_increasing(out)
    assert [c.index for c in out] == [50, 51, 52]  # 100..106 s: the restart continues at 103 s
    assert asm.stats.realignments == 2  # once for video, once for audio
    s = asm.stats
    assert (s.frames_backwards, s.frames_late, s.audio_samples_late, s.audio_samples_gap_filled) == (
        0,
        0,
        0,
        0,
    )
    for c in out:
        assert c.frames is not None and c.audio is not None
        first = 4 * (c.index - 50)
        assert c.frames[:, 0, 0, 0].tolist() == list(range(first, first + 4))
        # The packets were generated from their own (restarted) clock; shift by the 100-s offset.
        t0 = 2.0 * c.index
        expected = np.concatenate([_tone(t if t < 103 else t - 100, 1600) for t in t0 + np.arange(20) / 10])
        assert np.allclose(c.audio, expected, atol=1e-6)


def test_stalled_timestamps_are_dropped_and_advance_closes_the_chunk() -> None:
    asm = ChunkAssembler()
    stalled = _packet(0.5)  # 1600 samples
    out: list[MediaChunk] = []
    for _ in range(20):
        out += asm.push_video(VideoFrame(0.5, _rgb(7)))
    for _ in range(10):
        out += asm.push_audio(stalled)
    assert out == [] and asm.open_chunks == 1
    s = asm.stats
    assert (s.frames_used, s.frames_skipped) == (1, 19)
    assert s.audio_samples_late == 9 * 1600  # each repeat overlaps the audio already written
    assert asm.advance(2.4) == []  # 2.4 − 0.5 < chunk 0's end
    (chunk,) = asm.advance(2.5)
    assert chunk.index == 0 and chunk.frames is not None and chunk.audio is not None
    assert chunk.frames.shape == (4, 32, 32, 3) and (chunk.frames == 7).all()  # back-filled and held
    assert np.array_equal(chunk.audio[8000:9600], stalled.pcm)
    assert not chunk.audio[:8000].any() and not chunk.audio[9600:].any()
    assert asm.push_video(VideoFrame(1.0, _rgb(8))) == []  # chunk 0 is gone
    assert asm.stats.frames_late == 1
    asm.push_video(VideoFrame(2.0, _rgb(9)))
    assert [c.index for c in asm.flush()] == [1]


def test_media_for_an_emitted_chunk_is_dropped() -> None:
    asm = ChunkAssembler()  # audio lags video
    out = _push(asm, list(_packets(0.0, 1.8)))
    out += _push(asm, list(_frames(0.0, 3.0)))  # the frame at 2.5 s closes chunk 0
    assert [c.index for c in out] == [0]
    assert out[0].audio is not None and not out[0].audio[28800:].any()
    assert asm.push_audio(_packet(1.8, 0.2)) == []  # belongs to chunk 0: all 3200 samples late
    assert asm.stats.audio_samples_late == 3200
    out += _push(asm, list(_packets(2.0, 2.4))) + asm.flush()
    assert [c.index for c in out] == [0, 1]
    assert out[1].audio is not None and np.allclose(out[1].audio, _tone(2.0, 6400), atol=1e-6)

    asm = ChunkAssembler()  # video lags audio
    out = _push(asm, _by_time(_frames(0.0, 1.0), _packets(0.0, 3.0)))
    assert [c.index for c in out] == [0]
    out += _push(asm, list(_frames(1.0, 2.5, first_value=2)))  # 1.0 and 1.5 late; 2.0 is chunk 1
    assert asm.stats.frames_late == 2
    frames = out[0].frames
    assert frames is not None and frames[:, 0, 0, 0].tolist() == [0, 1, 1, 1]


def test_invalid_inputs_are_counted_and_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    good = _rgb(5)
    bad_frames: list[tuple[Any, Any]] = [
        (0.0, good.astype(np.float32)),
        (0.0, np.zeros((32, 32, 4), np.uint8)),  # RGBA
        (0.0, np.zeros(96, np.uint8)),  # 1-D
        (0.0, np.zeros((32, 32), np.uint8)),  # grey
        (0.0, np.zeros((1, 32, 3), np.uint8)),  # H < 2
        (0.0, np.zeros((2, 500, 3), np.uint8)),  # aspect 250 > 200
        (0.0, np.zeros((32, 32, 3), dtype=object)),
        (0.0, [[[0, 0, 0]]]),
        (0.0, None),
        (float("nan"), good),
        (float("inf"), good),
        ("0.0", good),
        (None, good),
    ]
    pcm = np.zeros(320, np.float32)
    bad_packets: list[tuple[Any, Any, Any]] = [
        (0.0, pcm, 0),
        (0.0, pcm, -16000),
        (0.0, pcm, 44100.5),
        (0.0, pcm, 10**9),
        (0.0, pcm, None),
        (0.0, np.full(320, np.nan, np.float32), SR),
        (0.0, np.full(320, np.inf, np.float32), SR),
        (0.0, np.zeros(320, dtype=object), SR),
        (0.0, np.zeros(320, np.complex64), SR),
        (0.0, np.zeros((320, 2, 2), np.float32), SR),
        (0.0, np.zeros((320, 0), np.float32), SR),
        (0.0, [0.0] * 320, SR),
        (float("nan"), pcm, SR),
    ]
    asm = ChunkAssembler()
    with caplog.at_level(logging.WARNING, logger="echo_core.stream.chunker"):
        for t, rgb in bad_frames:
            assert asm.push_video(VideoFrame(t, rgb)) == []
        for t, samples, rate in bad_packets:
            assert asm.push_audio(AudioPacket(t, samples, rate)) == []
        assert asm.advance(float("nan")) == []
    s = asm.stats
    assert (s.frames_invalid, s.frames_in) == (len(bad_frames), len(bad_frames))
    assert (s.audio_invalid, s.audio_packets_in) == (len(bad_packets), len(bad_packets))
    assert asm.open_chunks == 0 and s.frames_used == 0
    assert any("dtype float32" in r.getMessage() for r in caplog.records)
    assert any("sample_rate is 0" in r.getMessage() for r in caplog.records)
    # Good media after all that is still used.
    asm.push_video(VideoFrame(0.0, good))
    asm.push_audio(AudioPacket(0.0, np.full(320, 0.25, np.float32), SR))
    (chunk,) = asm.flush()
    assert chunk.frames is not None and chunk.frames.shape == (2, 32, 32, 3) and (chunk.frames == 5).all()
    assert chunk.audio is not None and chunk.audio.shape == (320,) and (chunk.audio == 0.25).all()
    assert s.frames_used == 1 and s.chunks_out == 1


# ---------------------------------------------------------------- construction and stats


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seconds_per_chunk": 0.0}, "must be > 0"),
        ({"seconds_per_chunk": -2.0}, "must be > 0"),
        ({"seconds_per_chunk": float("nan")}, "finite"),
        ({"fps": 0.0}, "must be > 0"),
        ({"fps": float("inf")}, "finite"),
        ({"seconds_per_chunk": 1.25}, "1.25 × 2.0 = 2.5"),  # slots would straddle chunks
        ({"seconds_per_chunk": 1 / 32000, "fps": 32000.0}, "16000 = 0.5"),  # half an audio sample
        ({"lateness_s": -0.1}, "lateness_s \\(-0.1\\)"),
        ({"jitter_s": -1.0}, "jitter_s \\(-1.0\\)"),
        ({"realign_s": 0.0}, "realign_s"),
        ({"realign_s": True}, "finite number"),
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ChunkAssembler(**kwargs)


def test_stats_to_dict_lists_every_counter() -> None:
    asm = ChunkAssembler()
    asm.push_video(VideoFrame(0.0, _rgb(1)))
    asm.push_video(VideoFrame(0.1, _rgb(2)))
    d = asm.stats.to_dict()
    assert set(d) == set(ChunkerStats.__dataclass_fields__)
    assert {"frames_skipped", "audio_samples_gap_filled", "realignments", "chunks_out"} <= set(d)
    assert (d["frames_in"], d["frames_used"], d["frames_skipped"]) == (2, 1, 1)
    assert all(type(v) is int for v in d.values())
