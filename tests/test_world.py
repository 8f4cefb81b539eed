"""Tests of echo_lab.world: determinism, invariants, ground truth recovered from the rendered media
alone (FFT, band energies, colour blobs), question families and container round trips."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import wave
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from scipy import ndimage

from echo_core.errors import ConfigError
from echo_lab.world import (
    ANSWER_WORDS,
    COLOUR_RGB,
    FAMILIES,
    FPS,
    FRAME_SIZE,
    MAX_TONES,
    NUMBERS,
    PITCHES,
    QUESTION_WORDS,
    SAMPLE_RATE,
    SPLITS,
    Clip,
    ClipSpec,
    clip_seed,
    iter_clips,
    make_clip,
    make_questions,
    sample_spec,
    write_mp4,
    write_wav,
    write_webm,
    write_y4m,
)
from echo_lab.world import spec as spec_module
from echo_lab.world.cuts import MIN_HEARD_S, cut_clip, live_cut
from echo_lab.world.pauses import ROOM_S, WORDS_S, pause_after, random_pause
from echo_lab.world.render import render_frames

pytestmark = pytest.mark.unit

N_GT = 30  # clips whose answers are re-derived from their media
_WIN, _HOP = 512, 160  # STFT of the detectors (32 ms window, 10 ms hop)


@pytest.fixture(scope="module")
def train_clips() -> list[Clip]:
    return list(iter_clips("train", 0, N_GT))


@pytest.fixture(scope="module")
def short_clip() -> Clip:
    return make_clip("test", 5, duration_s=8.0)


# ---------------------------------------------------------------- media analysis (spec-free)


def _blobs(frame: np.ndarray) -> list[tuple[str, str]]:
    """(colour, kind) of every solid palette-coloured blob; kind from how much of its bbox it fills."""
    out = []
    for colour, rgb in COLOUR_RGB.items():
        mask = (np.abs(frame.astype(np.int16) - np.array(rgb)) <= 30).all(axis=-1)
        labels, _ = ndimage.label(mask)
        for box in ndimage.find_objects(labels):
            fill = float(mask[box].mean())
            if mask[box].size >= 100:  # a shape is >= 26 px wide; ignore nothing-sized specks
                out.append((colour, "square" if fill > 0.92 else "circle" if fill > 0.65 else "triangle"))
    return out


def _stft_power(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[F, bins] power of Hann-windowed frames, and the bin frequencies in Hz."""
    n = 1 + (audio.size - _WIN) // _HOP
    idx = np.arange(_WIN)[None, :] + _HOP * np.arange(n)[:, None]
    spec = np.fft.rfft(audio[idx] * np.hanning(_WIN), axis=1)
    return np.abs(spec) ** 2, np.fft.rfftfreq(_WIN, 1 / SAMPLE_RATE)


def _runs(flags: np.ndarray, min_len: int = 10) -> list[tuple[int, int]]:
    """[start, end) index runs of True at least min_len long."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flags.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= min_len]


def _detect_tones(audio: np.ndarray) -> list[tuple[str, float, float]]:
    """(pitch, t_on, t_off) of each tone: frames where one pitch band holds most of the power above 150 Hz."""
    power, freqs = _stft_power(audio)
    total = power[:, freqs > 150].sum(axis=1) + 1e-12
    bands = np.stack([power[:, np.abs(freqs - f) <= 70].sum(axis=1) for f in PITCHES.values()], axis=1)
    best = bands.argmax(axis=1)
    tonal = bands.max(axis=1) / total > 0.5
    names = list(PITCHES)
    return [
        (names[int(np.bincount(best[a:b]).argmax())], a * _HOP / SAMPLE_RATE, (b * _HOP + _WIN) / SAMPLE_RATE)
        for a, b in _runs(tonal)
    ]


def _detect_noise(audio: np.ndarray) -> list[float]:
    """Onset times of white-noise bursts: mean power in 2–7 kHz far above the noise floor."""
    power, freqs = _stft_power(audio)
    band = power[:, (freqs > 2000) & (freqs < 7000)].mean(axis=1)
    return [(a * _HOP + _WIN // 2) / SAMPLE_RATE for a, _ in _runs(band > 100 * np.median(band), 5)]


def _first_seen(clip: Clip, target: tuple[str, str]) -> float:
    return next(float(t) for f, t in zip(clip.frames, clip.frame_times, strict=True) if target in _blobs(f))


# ---------------------------------------------------------------- determinism and seeds


def test_same_index_same_bytes_other_index_differs() -> None:
    a, b, c = make_clip("train", 3), make_clip("train", 3), make_clip("train", 4)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.audio.tobytes() == b.audio.tobytes()
    assert a.questions == b.questions and a.spec == b.spec
    assert a.spec != c.spec and a.audio.tobytes() != c.audio.tobytes()
    assert a.spec != make_clip("test", 3).spec


def test_split_seed_ranges_are_disjoint() -> None:
    top = spec_module._SEED_STRIDE - 1
    ranges = sorted((clip_seed(s, 0), clip_seed(s, top)) for s in SPLITS)
    assert all(hi < lo for (_, hi), (lo, _) in itertools.pairwise(ranges))
    assert all(clip_seed(s, 17) - clip_seed(s, 0) == 17 for s in SPLITS)
    for bad in (-1, top + 1):
        with pytest.raises(ConfigError):
            clip_seed("train", bad)
    with pytest.raises(ConfigError):
        clip_seed("valid", 0)


def test_bad_durations_and_sizes_are_refused() -> None:
    for d in (5.0, 12.3, 1000.0):
        with pytest.raises(ConfigError):
            sample_spec("train", 0, duration_s=d)
    with pytest.raises(ConfigError):
        make_clip("train", 0, size=8)


def test_spec_round_trips_through_json() -> None:
    spec = sample_spec("shift", 11)
    assert ClipSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# ---------------------------------------------------------------- invariants


def _check_invariants(clip: Clip) -> None:
    s, d = clip.spec, clip.spec.duration_s
    t = round(d * FPS)
    assert clip.frames.shape == (t, FRAME_SIZE, FRAME_SIZE, 3) and clip.frames.dtype == np.uint8
    np.testing.assert_array_equal(clip.frame_times, np.arange(t) / FPS)
    assert clip.audio.shape == (round(d * SAMPLE_RATE),) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() <= 1.0
    for on, off in [(e.t_on, e.t_off) for e in s.shapes] + [(e.t_on, e.t_off) for e in s.sounds]:
        assert 0.5 - 1e-9 <= on < off <= d - 0.5 + 1e-9
    for a, b in itertools.pairwise(s.sounds):
        assert b.t_on - a.t_off >= 0.3 - 1e-9
    assert all(0.4 - 1e-9 <= x.t_off - x.t_on <= 1.0 + 1e-9 for x in s.tones)
    assert all(0.3 - 1e-9 <= x.t_off - x.t_on <= 0.8 + 1e-9 for x in s.noises)
    assert len(s.tones) <= MAX_TONES
    for x in s.shapes:
        assert x.t_off - x.t_on >= 2.0 - 1e-9 and 26 <= x.size <= 34
        for cx, cy in (x.centre(x.t_on), x.centre(x.t_off)):
            assert x.size / 2 <= min(cx, cy) and max(cx, cy) <= FRAME_SIZE - x.size / 2
    for t0 in {x.t_on for x in s.shapes}:
        assert sum(x.visible(t0) for x in s.shapes) <= 2
    for frame in clip.frames:  # independently of the spec: at most 2 separate shapes in any frame
        assert len(_blobs(frame)) <= 2


def test_every_clip_keeps_the_invariants(train_clips: list[Clip]) -> None:
    for clip in (*train_clips, *iter_clips("shift", 0, 8), *iter_clips("test", 0, 8)):
        _check_invariants(clip)


def test_other_sizes_and_durations() -> None:
    clip = make_clip("train", 2, size=56, duration_s=12.0)
    assert clip.frames.shape == (24, 56, 56, 3) and clip.audio.size == 12 * SAMPLE_RATE


def test_a_camera_rate_shows_the_scene_at_each_frames_own_time(short_clip: Clip) -> None:
    """At 30 fps every 15th frame is the clip's own; a shape is on screen from its t_on to within
    1/30 s, where the clip's 2 fps frames show it up to half a second later."""
    frames, times = render_frames(short_clip.spec, fps=30)
    assert frames.shape == (240, FRAME_SIZE, FRAME_SIZE, 3)
    np.testing.assert_array_equal(times, np.arange(240) / 30)
    np.testing.assert_array_equal(frames[::15], short_clip.frames)
    for shape in short_clip.spec.shapes:
        target = (shape.colour, shape.kind)
        seen = next(float(t) for f, t in zip(frames, times, strict=True) if target in _blobs(f))
        assert shape.t_on <= seen < shape.t_on + 1 / 30 + 1e-9
    with pytest.raises(ConfigError):
        render_frames(short_clip.spec, fps=0.3)  # 8 s at 0.3 fps is not a whole number of frames


# ---------------------------------------------------------------- ground truth from the media


def test_answers_follow_from_the_media(train_clips: list[Clip]) -> None:
    checked = _answers_follow_from_the_media(train_clips)
    assert all(checked[f] >= 5 for f in FAMILIES), checked


def test_clips_cut_at_a_live_moment_answer_from_what_they_show(train_clips: list[Clip]) -> None:
    """A clip cut while a shape is on screen keeps the media up to now, and its questions,
    asked anew, still follow from those media (the same checks as whole clips)."""
    rng = random.Random(0)
    cuts = [c for c in (live_cut(clip, rng) for clip in (*train_clips, *iter_clips("train", 40, 40))) if c]
    assert len(cuts) >= 60
    for cut in cuts:
        now = cut.spec.duration_s
        assert cut.frame_times[-1] <= now < cut.frame_times[-1] + 1 / FPS
        assert cut.audio.size == round(now * SAMPLE_RATE)
        assert all(not 0 < now - s.t_on < MIN_HEARD_S for s in cut.spec.sounds)
    # mostly a seen shape is still on screen (not when δ fell before its first frame)
    on_screen = [any(s.t_off == c.spec.duration_s for s in c.spec.shapes) for c in cuts]
    assert sum(on_screen) >= 0.75 * len(cuts)
    checked = _answers_follow_from_the_media(cuts)
    assert all(checked[f] >= 5 for f in FAMILIES), checked
    # a shape that appeared after the last kept frame was never seen: the cut spec leaves it out
    whole, shape = next(
        (c, s) for c in train_clips for s in c.spec.shapes if math.ceil(s.t_on * FPS) / FPS > s.t_on + 0.01
    )
    unseen = cut_clip(whole, shape.t_on + 0.01)
    assert (shape.kind, shape.colour) not in {(s.kind, s.colour) for s in unseen.spec.shapes}
    with pytest.raises(ConfigError, match="cut time"):
        cut_clip(whole, whole.spec.duration_s + 1)


def test_clips_followed_by_a_pause_answer_from_what_they_show(train_clips: list[Clip]) -> None:
    """A clip followed by a spoken question's pause (its words silenced, then room tone, the last
    frame held) keeps every earlier sample and frame, and its questions, asked anew, still follow
    from the longer media (the same checks as whole clips)."""
    rng = random.Random(0)
    clips = [*train_clips, *(live_cut(c, rng) or c for c in iter_clips("train", 40, 20))]
    paused = [random_pause(c, rng) for c in clips]
    for before, after in zip(clips, paused, strict=True):
        d0, d = before.spec.duration_s, after.spec.duration_s
        assert d0 + WORDS_S[0] + ROOM_S[0] - 0.5 <= d <= d0 + WORDS_S[1] + ROOM_S[1] + 0.5
        assert after.frame_times[-1] <= d <= after.frame_times[-1] + 1 / FPS + 1e-9
        assert after.audio.size == round(d * SAMPLE_RATE)
        n0 = len(before.frames)
        assert np.array_equal(after.frames[:n0], before.frames)
        assert (after.frames[n0:] == before.frames[-1]).all()
        assert np.array_equal(after.audio[: before.audio.size], before.audio)
        pause = after.audio[before.audio.size :]
        silent = int(np.argmax(pause != 0))  # the words, silenced, then the room's own sound
        assert silent >= round(0.9 * WORDS_S[0] * SAMPLE_RATE) and not pause[:silent].any()
        room = pause[silent:]
        assert room.size > 0 and 0.01 < float(room.std()) < 0.05
    checked = _answers_follow_from_the_media(paused)
    assert all(checked[f] >= 5 for f in FAMILIES), checked
    whole = train_clips[0]
    assert pause_after(whole, 0.0, 0.0) is whole
    with pytest.raises(ConfigError, match="negative"):
        pause_after(whole, -1.0, 0.5)


def _answers_follow_from_the_media(clips: list[Clip]) -> Counter[str]:
    checked: Counter[str] = Counter()
    for clip in clips:
        d = clip.spec.duration_s
        tones = _detect_tones(clip.audio)
        for q in clip.questions:
            if q.family == "audio_pitch":
                on, off = (
                    round(v * SAMPLE_RATE) for v in (clip.spec.tones[0].t_on, clip.spec.tones[0].t_off)
                )
                seg = clip.audio[on:off].astype(np.float64)
                mag = np.abs(np.fft.rfft(seg * np.hanning(seg.size), n=8 * seg.size))
                freqs = np.fft.rfftfreq(8 * seg.size, 1 / SAMPLE_RATE)
                assert abs(freqs[mag.argmax()] - PITCHES[q.answer]) < 5.0
                assert tones[0][0] == q.answer
            elif q.family == "count":
                assert NUMBERS[len(tones)] == q.answer
            elif q.family == "video_shape":
                seen = {b for f in clip.frames for b in _blobs(f)}
                word = q.text.split()[-2] if q.text.endswith("object") else q.text.split()[-1]
                if q.text.startswith("what shape"):
                    assert {k for c, k in seen if c == word} == {q.answer}
                else:
                    assert {c for c, k in seen if k == word} == {q.answer}
            elif q.family == "av_binding":
                pitch = q.text.split()[-3]
                (hit,) = [(a, b) for p, a, b in tones if p == pitch]
                nearest = int(np.abs(clip.frame_times - (hit[0] + hit[1]) / 2).argmin())
                assert [c for c, _ in _blobs(clip.frames[nearest])] == [q.answer]
            elif q.family == "av_order":
                (t_noise,) = _detect_noise(clip.audio)
                colour, kind = q.text.split()[-2:]
                t_shape = _first_seen(clip, (colour, kind))
                assert q.answer == ("noise" if t_noise < t_shape else kind)
            elif q.family == "recency":
                late = {
                    b
                    for f, t in zip(clip.frames, clip.frame_times, strict=True)
                    if t >= d - 4
                    for b in _blobs(f)
                }
                early = {
                    b
                    for f, t in zip(clip.frames, clip.frame_times, strict=True)
                    if t < d - 4
                    for b in _blobs(f)
                }
                assert len(late) == 1 and next(iter(late))[1] == q.answer and not late & early
            checked[q.family] += 1
    return checked


# ---------------------------------------------------------------- question families


def test_families_answers_and_vocabulary() -> None:
    counts: Counter[str] = Counter()
    for i in range(200):
        spec = sample_spec("train", i)
        questions = make_questions(spec)
        assert questions == make_questions(spec)
        families = [q.family for q in questions]
        assert len(families) == len(set(families)) and set(families) <= set(FAMILIES)
        for q in questions:
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", q.text), q.text
            assert q.answer in ANSWER_WORDS
            assert set(q.text.split()) <= set(QUESTION_WORDS)
        counts.update(families)
    assert all(counts[f] >= 30 for f in FAMILIES), counts
    assert len(set(ANSWER_WORDS)) == len(ANSWER_WORDS)


def test_shift_is_longer_and_denser() -> None:
    test = [sample_spec("test", i) for i in range(100)]
    shift = [sample_spec("shift", i) for i in range(100)]
    ratio = np.mean([s.duration_s for s in shift]) / np.mean([s.duration_s for s in test])
    assert 1.7 < ratio < 2.3
    for attr in ("n_audio_events", "n_video_events"):
        assert np.mean([getattr(s, attr) for s in shift]) > np.mean([getattr(s, attr) for s in test])
    assert max(len(s.tones) for s in shift) <= MAX_TONES
    assert np.mean([len(s.clutter) for s in shift]) > np.mean([len(s.clutter) for s in test])


def test_val_is_drawn_like_test_from_its_own_seeds() -> None:
    test = [sample_spec("test", i) for i in range(100)]
    val = [sample_spec("val", i) for i in range(100)]
    assert all(8.0 <= s.duration_s <= 16.0 for s in val)
    for attr in ("duration_s", "n_audio_events", "n_video_events"):
        a, b = np.mean([getattr(s, attr) for s in val]), np.mean([getattr(s, attr) for s in test])
        assert abs(a - b) / b < 0.15, (attr, a, b)
    assert all(v != t for v, t in zip(val, test, strict=True))


# ---------------------------------------------------------------- containers


def _decode(path: Path) -> tuple[list[np.ndarray], float, int, float]:
    """RGB frames, video fps, audio sample rate (0 if none) and decoded audio seconds."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        fps = float(c.streams.video[0].average_rate or 0)
    rate, seconds = 0, 0.0
    with av.open(str(path)) as c:
        if c.streams.audio:
            for f in c.decode(audio=0):
                rate, seconds = f.sample_rate, seconds + f.samples / f.sample_rate
    return frames, fps, rate, seconds


@pytest.mark.parametrize("writer", [write_mp4, write_webm])
def test_mp4_and_webm_round_trip(
    short_clip: Clip, tmp_path: Path, writer: Callable[[Clip, Path], Path]
) -> None:
    path = writer(short_clip, tmp_path / f"clip.{writer.__name__.removeprefix('write_')}")
    frames, fps, rate, seconds = _decode(path)
    assert len(frames) == short_clip.frames.shape[0] and fps == FPS
    assert rate > 0 and abs(seconds - short_clip.spec.duration_s) < 0.1
    err = np.abs(np.stack(frames).astype(np.int16) - short_clip.frames).mean()
    assert err < 4.0, f"mean abs pixel error {err:.2f}"


def test_y4m_round_trip(short_clip: Clip, tmp_path: Path) -> None:
    path = write_y4m(short_clip, tmp_path / "clip.y4m")
    frames, fps, _, _ = _decode(path)
    assert len(frames) == short_clip.frames.shape[0] and fps == FPS
    # luma is exact up to rounding; chroma is 2x2-averaged, so edges of shapes differ a little
    assert np.abs(np.stack(frames).astype(np.int16) - short_clip.frames).mean() < 3.0
    path30 = write_y4m(short_clip, tmp_path / "clip30.y4m", fps=30)
    header = path30.read_bytes().split(b"\n", 1)[0].decode()
    assert header.split()[:4] == ["YUV4MPEG2", "W112", "H112", "F30:1"] and "C420jpeg" in header
    n30 = round(short_clip.spec.duration_s * 30)
    assert path30.stat().st_size == len(header) + 1 + n30 * (6 + FRAME_SIZE * FRAME_SIZE * 3 // 2)


def test_wav_round_trip(short_clip: Clip, tmp_path: Path) -> None:
    path = write_wav(short_clip, tmp_path / "clip.wav")
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert pcm.size == short_clip.audio.size
    assert np.abs(pcm / 32767.0 - short_clip.audio).max() < 1e-4
