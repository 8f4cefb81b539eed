"""Spoken versions of the world's questions: each text rendered by espeak-ng over the world's hum.

The `train` split speaks in a training voice pool (`TRAINING_POOLS`: "base", 8 voices, or
"wide", 5 accents x 14 variants with wider rates and pitches); every other split in
HELD_OUT, so a spoken benchmark hears voices the model never heard in training: no training
pool holds a held-out accent or a held-out variant. Voice, rate and pitch are drawn per question
from a generator seeded by (clip seed, family), like the questions themselves, so a clip's
spoken questions are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from echo_core.speech import SPOKEN_PEAK
from echo_core.tts import Voice, synthesize

from .questions import FAMILIES, Question
from .render import FLOOR_STD, HUM_AMP, HUM_HZ
from .spec import SAMPLE_RATE, ClipSpec


@dataclass(frozen=True)
class VoicePool:
    """espeak-ng voices (language + variant) and the [low, high) ranges of rate and pitch."""

    names: tuple[str, ...]
    rate_wpm: tuple[int, int] = (140, 210)
    pitch: tuple[int, int] = (30, 71)


#: The voices the benchmarks hear (other accents and variants than any training pool).
HELD_OUT = VoicePool(("en-gb-scotland+m7", "en-us-nyc+f4", "en-gb-x-gbclan+m4"))
#: echo-tiny's first spoken training voices.
BASE = VoicePool(
    (
        "en-us",
        "en-us+m3",
        "en-us+f2",
        "en-gb",
        "en-gb+f1",
        "en-gb+m1",
        "en-gb-x-rp+m5",
        "en-029+f5",
    )
)
WIDE_ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd")
WIDE_VARIANTS = ("", "m1", "m2", "m3", "m5", "m6", "m8", "f1", "f2", "f3", "f5", "klatt", "klatt2", "klatt3")
#: Many more speakers: every training accent with every variant but the held-out ones, spoken
#: faster, slower, higher and lower than the benchmarks' range.
WIDE = VoicePool(
    tuple(a + (f"+{v}" if v else "") for a in WIDE_ACCENTS for v in WIDE_VARIANTS),
    rate_wpm=(120, 241),
    pitch=(10, 91),
)
TRAINING_POOLS = {"base": BASE, "wide": WIDE}
#: Silence before and after the words, seconds.
PAD_S = 0.15


def pool_for(split: str, training: str = "base") -> VoicePool:
    """The voices of `split`: the `training` pool for `train`, HELD_OUT for every other split."""
    return TRAINING_POOLS[training] if split == "train" else HELD_OUT


def question_voice(spec: ClipSpec, question: Question, training: str = "base") -> Voice:
    """The voice, rate and pitch that speak `question` of this clip (`training`: the pool of
    the `train` split)."""
    rng = np.random.default_rng([spec.seed, 0x5045, FAMILIES.index(question.family)])
    pool = pool_for(spec.split, training)
    return Voice(
        pool.names[int(rng.integers(len(pool.names)))],
        int(rng.integers(*pool.rate_wpm)),
        int(rng.integers(*pool.pitch)),
    )


def speak(text: str, voice: Voice, seed: int) -> np.ndarray:
    """`text` in `voice` at SAMPLE_RATE with PAD_S of silence around it and the world's hum and
    noise floor under all of it: float32 mono."""
    words = synthesize(text, voice, SAMPLE_RATE)
    words = SPOKEN_PEAK * words / max(1e-6, float(np.abs(words).max()))
    pad = round(PAD_S * SAMPLE_RATE)
    n = len(words) + 2 * pad
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng([seed, 0x4855])
    under = HUM_AMP * np.sin(2 * np.pi * HUM_HZ * t) + FLOOR_STD * rng.standard_normal(n)
    under[pad : pad + len(words)] += words
    return np.clip(under, -1.0, 1.0).astype(np.float32)


def spoken_question(spec: ClipSpec, question: Question, training: str = "base") -> np.ndarray:
    """`question` of this clip spoken (see `speak`), in the split's voices."""
    return speak(question.text, question_voice(spec, question, training), spec.seed)
