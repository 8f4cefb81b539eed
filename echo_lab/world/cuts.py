"""Clips cut short while something is still happening: what a live stream looks like when asked.

A live question is asked at the stream's *now*, often while a shape has just appeared and is
still on screen. `cut_clip(clip, now)` keeps the media up to `now` (the frames at t ≤ now, the
samples before it) and rewrites the spec to what those media show: shapes seen in at least one
kept frame, with their end clipped to now; sounds begun before now, clipped the same way. The
questions are asked anew from that spec, so every answer holds for the cut media.

`live_cut(clip, rng)` draws such a moment: a shape's onset plus δ ~ U[DELTA_MIN_S, DELTA_MAX_S]
while it is still on screen, moved back to a sound's onset where it would fall in the sound's
first MIN_HEARD_S (a sliver of a tone cannot be told apart; counting it would be ambiguous).
"""

from __future__ import annotations

import random
from dataclasses import replace

from echo_core.errors import ConfigError

from .questions import make_questions
from .render import Clip
from .spec import SAMPLE_RATE, ClipSpec

DELTA_MIN_S, DELTA_MAX_S = 0.1, 3.0
MIN_HEARD_S = 0.15
MIN_NOW_S = 1.0
_EPS = 1e-6


def cut_spec(spec: ClipSpec, now_s: float, frame_times: list[float]) -> ClipSpec:
    """`spec` as the media up to `now_s` show it, `frame_times` being the kept frames' times
    (see the module docstring)."""
    shapes = tuple(
        replace(s, t_off=min(s.t_off, now_s))
        for s in spec.shapes
        if any(s.t_on <= t < s.t_off for t in frame_times)
    )
    sounds = tuple(replace(s, t_off=min(s.t_off, now_s)) for s in spec.sounds if s.t_on < now_s - _EPS)
    return replace(spec, duration_s=now_s, shapes=shapes, sounds=sounds)


def cut_clip(clip: Clip, now_s: float) -> Clip:
    """The clip as a live stream has it at `now_s`: media up to now, questions about them."""
    if not 0 < now_s <= clip.spec.duration_s:
        raise ConfigError(f"cut time must be in (0, {clip.spec.duration_s}] s, got {now_s}")
    frames = clip.frame_times <= now_s + _EPS
    spec = cut_spec(clip.spec, now_s, [float(t) for t in clip.frame_times[frames]])
    return Clip(
        spec,
        clip.frames[frames],
        clip.frame_times[frames],
        clip.audio[: round(now_s * SAMPLE_RATE)],
        make_questions(spec),
    )


def live_cut(clip: Clip, rng: random.Random) -> Clip | None:
    """The clip cut δ after one of its shapes appeared, while it is on screen; None when no
    such moment exists (no shape, or every candidate falls before MIN_NOW_S)."""
    if not clip.spec.shapes:
        return None
    shape = rng.choice(clip.spec.shapes)
    longest = min(DELTA_MAX_S, shape.t_off - shape.t_on - 0.001)
    now = round((shape.t_on + rng.uniform(DELTA_MIN_S, longest)) * 1000) / 1000
    for sound in clip.spec.sounds:
        if 0 < now - sound.t_on < MIN_HEARD_S:
            now = sound.t_on
    if now < MIN_NOW_S or now <= shape.t_on:
        return None
    return cut_clip(clip, now)
