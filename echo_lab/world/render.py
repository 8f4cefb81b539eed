"""Pixels and samples of a clip from its `ClipSpec`, and the `Clip` bundle (media + questions).

Video: a static, low-contrast textured grey background (identical in every frame, so video tokens are
temporally redundant), grey clutter dots drifting the whole clip, and hard-edged saturated shapes
(no anti-aliasing, so every shape pixel has exactly its palette colour). Frame i shows t = i / FPS.

Audio: a constant 100 Hz hum and a faint white-noise floor, plus sine tones and white-noise bursts
with 10 ms raised-cosine fades (no clicks, so tone onsets carry no broadband energy).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from echo_core.errors import ConfigError

from .questions import Question, make_questions
from .spec import COLOUR_RGB, FPS, FRAME_SIZE, PITCHES, SAMPLE_RATE, ClipSpec, sample_spec

logger = logging.getLogger(__name__)

HUM_HZ, HUM_AMP, FLOOR_STD = 100.0, 0.03, 0.005
TONE_AMP, NOISE_STD = 0.3, 0.2
FADE_S = 0.010
_MIN_SIZE = 16
_TEXTURE_GRID = 6  # control points per side of the background texture
_AUDIO_STREAM = 1  # SeedSequence key of the audio noise, independent of the sampler's stream


# eq=False: field-wise == on arrays is ambiguous, so compare by identity.
@dataclass(frozen=True, eq=False)
class Clip:
    """A rendered clip.

    frames: [T, H, W, 3] uint8 RGB, T = duration_s * FPS; frame i shows t = i / FPS.
    frame_times: [T] float64 seconds, i / FPS.
    audio: [N] float32 mono in [-1, 1] at SAMPLE_RATE, N = duration_s * SAMPLE_RATE.
    questions: every answerable question family, at most one question each (see questions.py).
    """

    spec: ClipSpec
    frames: np.ndarray
    frame_times: np.ndarray
    audio: np.ndarray
    questions: tuple[Question, ...]


def n_frames(spec: ClipSpec) -> int:
    """T = duration_s * FPS (the sampler only produces durations that are whole frames)."""
    return round(spec.duration_s * FPS)


def n_samples(spec: ClipSpec) -> int:
    """N = duration_s * SAMPLE_RATE."""
    return round(spec.duration_s * SAMPLE_RATE)


def _hat_matrix(size: int, grid: int) -> np.ndarray:
    """[size, grid] float64 bilinear interpolation weights from `grid` control points to `size` pixels."""
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    return np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(grid)[None, :]))


def render_background(seed: int, size: int) -> np.ndarray:
    """[size, size, 3] uint8: a dark, slightly tinted grey with a smooth ±10-level texture.

    Dark (levels ~50–100) and low in saturation, so it is far from every shape colour and below the
    clutter dots' grey (130–160).
    """
    rng = np.random.default_rng(seed)
    base = rng.uniform(55.0, 80.0) + rng.uniform(-5.0, 5.0, size=3)
    m = _hat_matrix(size, _TEXTURE_GRID)
    texture = m @ rng.uniform(-10.0, 10.0, size=(_TEXTURE_GRID, _TEXTURE_GRID)) @ m.T
    return np.clip(np.round(base[None, None, :] + texture[:, :, None]), 0, 255).astype(np.uint8)


def _shape_mask(kind: str, cx: float, cy: float, size: float, u: np.ndarray) -> np.ndarray:
    """[S, S] bool pixels of a shape; u is [S] float64 pixel-centre coordinates in FRAME_SIZE units."""
    x, y = u[None, :] - cx, u[:, None] - cy
    h = size / 2
    if kind == "circle":
        return np.asarray(x * x + y * y <= h * h)
    if kind == "square":
        return np.asarray((np.abs(x) <= h) & (np.abs(y) <= h))
    if kind == "triangle":  # apex up: width grows from 0 at y = -h to `size` at y = +h
        return np.asarray((y >= -h) & (y <= h) & (np.abs(x) <= (y + h) / 2))
    raise ConfigError(f"unknown shape kind {kind!r}; expected circle, square or triangle")


def render_frames(spec: ClipSpec, size: int = FRAME_SIZE, fps: float = FPS) -> tuple[np.ndarray, np.ndarray]:
    """Frames [T, size, size, 3] uint8 and their times [T] float64 (i / fps) of a clip.

    Geometry is defined on a FRAME_SIZE grid and scaled, so any `size` shows the same scene.
    At the world's FPS these are the clip's frames; at a camera's rate (30 fps) they are what
    a camera filming the scene would see, each frame the scene at its own time.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < _MIN_SIZE:
        raise ConfigError(f"frame size must be an integer >= {_MIN_SIZE}, got {size!r}")
    per_clip = spec.duration_s * fps
    if not fps > 0 or abs(per_clip - round(per_clip)) > 1e-6:
        raise ConfigError(
            f"fps must be > 0 and give a whole number of frames in {spec.duration_s} s, got {fps}"
        )
    t_count = round(per_clip)
    times = np.arange(t_count, dtype=np.float64) / fps
    u = (np.arange(size) + 0.5) * (FRAME_SIZE / size)
    frames = np.repeat(render_background(spec.background_seed, size)[None], t_count, axis=0)
    for i, t in enumerate(times):
        frac = t / spec.duration_s
        # clutter first: shapes are drawn over it, so a dot never hides part of a shape
        for d in spec.clutter:
            mask = _shape_mask("circle", d.x0 + frac * (d.x1 - d.x0), d.y0 + frac * (d.y1 - d.y0), d.size, u)
            frames[i][mask] = d.grey
        for s in spec.shapes:
            if s.visible(float(t)):
                cx, cy = s.centre(float(t))
                frames[i][_shape_mask(s.kind, cx, cy, s.size, u)] = COLOUR_RGB[s.colour]
    return frames, times


def _fade(n: int) -> np.ndarray:
    """[n] float64 envelope: raised-cosine ramps of FADE_S at both ends (shorter if n is tiny)."""
    ramp = min(round(FADE_S * SAMPLE_RATE), n // 2)
    env = np.ones(n)
    if ramp > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
        env[:ramp], env[n - ramp :] = r, r[::-1]
    return env


def room_tone(n: int, rng: np.random.Generator, start_s: float = 0.0) -> np.ndarray:
    """`n` samples of the world's hum and noise floor with no event in it, from time `start_s`: float64."""
    t = start_s + np.arange(n) / SAMPLE_RATE
    return HUM_AMP * np.sin(2 * np.pi * HUM_HZ * t) + FLOOR_STD * rng.standard_normal(n)


def render_audio(spec: ClipSpec) -> np.ndarray:
    """[N] float32 mono in [-1, 1] at SAMPLE_RATE: hum + noise floor + the spec's tones and noise bursts."""
    rng = np.random.default_rng([spec.seed, _AUDIO_STREAM])
    audio = room_tone(n_samples(spec), rng)
    for s in spec.sounds:
        a, b = round(s.t_on * SAMPLE_RATE), round(s.t_off * SAMPLE_RATE)
        if s.kind == "tone":
            if s.pitch not in PITCHES:
                raise ConfigError(
                    f"tone at {s.t_on} s has pitch {s.pitch!r}; expected one of {list(PITCHES)}"
                )
            wave = TONE_AMP * np.sin(2 * np.pi * PITCHES[s.pitch] * np.arange(b - a) / SAMPLE_RATE)
        else:
            wave = NOISE_STD * rng.standard_normal(b - a)
        audio[a:b] += _fade(b - a) * wave
    # Gaussian bursts can exceed 1 in rare samples (> 4 sigma); clipping them is inaudible.
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def make_clip(split: str, index: int, *, size: int = FRAME_SIZE, duration_s: float | None = None) -> Clip:
    """Sample, render and question clip `index` of `split` (deterministic)."""
    spec = sample_spec(split, index, duration_s=duration_s)
    frames, times = render_frames(spec, size)
    return Clip(spec, frames, times, render_audio(spec), make_questions(spec))


def iter_clips(
    split: str, start: int, count: int, *, size: int = FRAME_SIZE, duration_s: float | None = None
) -> Iterator[Clip]:
    """Clips start, start + 1, ..., start + count - 1 of `split`, rendered lazily one at a time."""
    if count < 0:
        raise ConfigError(f"clip count must be >= 0, got {count}")
    for index in range(start, start + count):
        yield make_clip(split, index, size=size, duration_s=duration_s)
