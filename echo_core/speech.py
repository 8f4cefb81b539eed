"""A question asked aloud: the audio of one utterance, which the model hears in the user turn.

Qwen2.5-Omni takes spoken instructions natively: the utterance goes through the audio encoder
and its tokens sit in the user turn after the AV window, positioned after the stream's now
(`Modality.SPEECH`: positioned like audio, never sieved, never part of the scene cache). No
speech recogniser runs in between.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidMediaError

#: Longest utterance taken as one question, in seconds.
MAX_SPOKEN_S = 30.0
#: Shortest: below this the audio encoder yields no token.
MIN_SPOKEN_S = 0.1
#: The peak (full scale 1.0) at which the model hears a question's words: the level echo-tiny's
#: spoken questions are rendered at for training and evaluation (`echo_lab.world.speech`).
SPOKEN_PEAK = 0.5
#: An utterance whose peak is within this many dB of SPOKEN_PEAK is heard as it is.
LEVEL_TOLERANCE_DB = 2.0
#: The most an utterance is raised (dB): anything quieter is mostly room, not words.
MAX_GAIN_DB = 20.0


@dataclass(frozen=True, eq=False)
class SpokenQuestion:
    """Mono samples of one utterance (float in [-1, 1], any rate; the encoder takes 16 kHz).

    `asked_at_s`: the stream time where the speech began, when the words came from the
    session's own microphone; a live answer reads the stream up to there
    (`StreamConfig.spoken_until`). None: asked at the stream's now, like a typed question.
    """

    samples: np.ndarray
    sample_rate: int = 16000
    asked_at_s: float | None = None

    def __post_init__(self) -> None:
        a = np.asarray(self.samples)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.floating):
            raise InvalidMediaError(f"a spoken question must be 1-D float samples, got {a.dtype} {a.shape}")
        if self.sample_rate < 8000:
            raise InvalidMediaError(f"a spoken question needs ≥ 8000 Hz, got {self.sample_rate}")
        if not MIN_SPOKEN_S <= self.duration_s <= MAX_SPOKEN_S:
            raise InvalidMediaError(
                f"a spoken question must last {MIN_SPOKEN_S:g}–{MAX_SPOKEN_S:g} s, "
                f"got {self.duration_s:.2f} s"
            )
        if not np.isfinite(a).all():
            raise InvalidMediaError("a spoken question's samples must be finite")
        object.__setattr__(self, "samples", a.astype(np.float32, copy=False))

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def __str__(self) -> str:
        return f"(spoken, {self.duration_s:.1f} s)"


#: What `ask` takes: typed text or an utterance.
Question = str | SpokenQuestion


def heard_level(samples: np.ndarray) -> np.ndarray:
    """An utterance at the level the model hears questions at: scaled so its peak is SPOKEN_PEAK,
    unless that peak is within LEVEL_TOLERANCE_DB of it already (then unchanged); raised by at
    most MAX_GAIN_DB. A microphone's gain, a browser's automatic gain control or a codec moves a
    question's level by several dB, and echo-tiny answers a question 3 dB off its training level
    noticeably worse (`docs/experiments.md`); the level carries nothing the answer needs.
    """
    peak = float(np.abs(samples).max()) if len(samples) else 0.0
    if peak <= 0.0:
        return samples
    off_db = 20 * np.log10(SPOKEN_PEAK / peak)
    if abs(off_db) <= LEVEL_TOLERANCE_DB:
        return samples
    gain = 10 ** (min(off_db, MAX_GAIN_DB) / 20)
    return (samples * gain).astype(np.float32)
