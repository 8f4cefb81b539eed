"""Mono audio frames that aiortc's Opus encoder carries at their own level.

aiortc encodes Opus as 48 kHz stereo. A mono frame reaches its encoder through libswresample's
upmix, which pans the one channel into both at -3 dB (x 0.707); decoded and mixed back to mono
(the server's ingest) or played (a browser, `echo-client`), the sound is 3 dB quieter than it
was sent. A frame that carries the mono samples in both channels is encoded as it is.
"""

from __future__ import annotations

import fractions

import numpy as np
from av import AudioFrame


def full_level_frame(samples: np.ndarray, sample_rate: int, pts: int) -> AudioFrame:
    """Mono int16 samples [n] as an s16 stereo frame (the same samples in both channels)."""
    mono = np.asarray(samples, dtype=np.int16).reshape(-1)
    frame = AudioFrame.from_ndarray(np.repeat(mono, 2)[None, :], format="s16", layout="stereo")
    frame.sample_rate, frame.pts, frame.time_base = sample_rate, pts, fractions.Fraction(1, sample_rate)
    return frame
