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
