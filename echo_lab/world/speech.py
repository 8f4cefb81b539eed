"""Spoken versions of the world's questions: each text rendered by espeak-ng over the world's hum.

The `train` split speaks with TRAIN_VOICES; every other split with HELD_OUT_VOICES, so a spoken
benchmark hears voices the model never heard in training. Rate and pitch are drawn per question
from a generator seeded by (clip seed, family), like the questions themselves, so a clip's spoken
questions are deterministic.
"""

from __future__ import annotations

import numpy as np

from echo_core.tts import Voice, synthesize

from .questions import FAMILIES, Question
from .render import FLOOR_STD, HUM_AMP, HUM_HZ
from .spec import SAMPLE_RATE, ClipSpec

#: espeak-ng voices (language + variant) heard in training.
TRAIN_VOICES: tuple[str, ...] = (
    "en-us",
    "en-us+m3",
    "en-us+f2",
    "en-gb",
    "en-gb+f1",
    "en-gb+m1",
    "en-gb-x-rp+m5",
    "en-029+f5",
)
#: Voices only the benchmarks hear (other accents and variants).
HELD_OUT_VOICES: tuple[str, ...] = ("en-gb-scotland+m7", "en-us-nyc+f4", "en-gb-x-gbclan+m4")
RATE_WPM = (140, 210)  # [low, high)
PITCH = (30, 71)
SPEECH_PEAK = 0.5
#: Silence before and after the words, seconds.
PAD_S = 0.15


def voices_for(split: str) -> tuple[str, ...]:
    return TRAIN_VOICES if split == "train" else HELD_OUT_VOICES


def question_voice(spec: ClipSpec, question: Question) -> Voice:
    """The voice, rate and pitch that speak `question` of this clip."""
    rng = np.random.default_rng([spec.seed, 0x5045, FAMILIES.index(question.family)])
    names = voices_for(spec.split)
    return Voice(
        names[int(rng.integers(len(names)))], int(rng.integers(*RATE_WPM)), int(rng.integers(*PITCH))
    )


def speak(text: str, voice: Voice, seed: int) -> np.ndarray:
    """`text` in `voice` at SAMPLE_RATE with PAD_S of silence around it and the world's hum and
    noise floor under all of it: float32 mono."""
    words = synthesize(text, voice, SAMPLE_RATE)
    words = SPEECH_PEAK * words / max(1e-6, float(np.abs(words).max()))
    pad = round(PAD_S * SAMPLE_RATE)
    n = len(words) + 2 * pad
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng([seed, 0x4855])
    under = HUM_AMP * np.sin(2 * np.pi * HUM_HZ * t) + FLOOR_STD * rng.standard_normal(n)
    under[pad : pad + len(words)] += words
    return np.clip(under, -1.0, 1.0).astype(np.float32)


def spoken_question(spec: ClipSpec, question: Question) -> np.ndarray:
    """`question` of this clip spoken (see `speak`), in the split's voices."""
    return speak(question.text, question_voice(spec, question), spec.seed)
