"""Clips followed by a pause: the scene a spoken question is answered from in a live session.

A user speaks a question after something happened. The service takes the words out of the scene
audio (`forget_audio` silences them before the encoders hear them) and asks them, so the scene
the answer reads runs on past the events: the camera's last view holds while the words (now
digital silence) and the turn detector's silence window (the room's own sound) go by.
`pause_after(clip, words_s, room_s)` builds that scene: the clip's last frame held, `words_s` of
silence, then `room_s` of the world's hum and noise floor. The spec is rewritten to what the
longer media show (a shape on screen at the clip's end stays on screen) and the questions are
asked anew from it, so every answer holds for the paused clip.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from echo_core.errors import ConfigError

from .questions import make_questions
from .render import Clip, room_tone
from .spec import FPS, SAMPLE_RATE, ClipSpec

WORDS_S = (1.0, 3.0)  # how long a spoken question lasts
ROOM_S = (0.5, 1.0)  # the silence window after it, before the question is asked
_EPS = 1e-6


def held_frames(clip: Clip, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`clip`'s frames and frame times with its last frame repeated `n` more times at FPS."""
    times = clip.frame_times[-1] + np.arange(1, n + 1) / FPS
    frames = np.concatenate([clip.frames, np.repeat(clip.frames[-1:], n, axis=0)])
    return frames, np.concatenate([clip.frame_times, times])


def paused_spec(spec: ClipSpec, end_s: float) -> ClipSpec:
    """`spec` run on, with nothing new, until `end_s`: shapes on screen at the end stay there."""
    shapes = tuple(replace(s, t_off=end_s) if s.t_off >= spec.duration_s - _EPS else s for s in spec.shapes)
    return replace(spec, duration_s=end_s, shapes=shapes)


def pause_after(clip: Clip, words_s: float, room_s: float, seed: int = 0) -> Clip:
    """`clip` followed by `words_s` of silence and `room_s` of room tone, its last frame held.

    The pause is rounded to whole frames, so frames and samples keep covering the same time.
    """
    if words_s < 0 or room_s < 0:
        raise ConfigError(f"a pause cannot be negative, got words {words_s} s, room {room_s} s")
    n_frames = round((words_s + room_s) * FPS)
    if n_frames == 0:
        return clip
    end_s = clip.spec.duration_s + n_frames / FPS
    silent = round(min(words_s, n_frames / FPS) * SAMPLE_RATE)
    n_room = round(end_s * SAMPLE_RATE) - len(clip.audio) - silent
    start_s = (len(clip.audio) + silent) / SAMPLE_RATE
    room = room_tone(n_room, np.random.default_rng(seed), start_s).astype(np.float32)
    frames, frame_times = held_frames(clip, n_frames)
    spec = paused_spec(clip.spec, end_s)
    return replace(
        clip,
        spec=spec,
        frames=frames,
        frame_times=frame_times,
        audio=np.concatenate([clip.audio, np.zeros(silent, np.float32), room]),
        questions=make_questions(spec),
    )


def random_pause(clip: Clip, rng: random.Random) -> Clip:
    """`pause_after` with the words' and the silence window's lengths drawn from WORDS_S and ROOM_S."""
    return pause_after(clip, rng.uniform(*WORDS_S), rng.uniform(*ROOM_S), seed=rng.randrange(2**31))
