"""Mono audio frames that aiortc's Opus encoder carries at their own level.

aiortc encodes Opus as 48 kHz stereo. A mono frame reaches its encoder through libswresample's
upmix, which pans the one channel into both at -3 dB (x 0.707); decoded and mixed back to mono
(the server's ingest) or played (a browser, `echo-client`), the sound is 3 dB quieter than it
was sent. A frame that carries the mono samples in both channels is encoded as it is;
`FullLevelAudio` does that for a track Echo does not make itself (a file's sound).
"""

from __future__ import annotations

import fractions
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame


def full_level_frame(samples: np.ndarray, sample_rate: int, pts: int) -> AudioFrame:
    """Mono int16 samples [n] as an s16 stereo frame (the same samples in both channels)."""
    mono = np.asarray(samples, dtype=np.int16).reshape(-1)
    frame = AudioFrame.from_ndarray(np.repeat(mono, 2)[None, :], format="s16", layout="stereo")
    frame.sample_rate, frame.pts, frame.time_base = sample_rate, pts, fractions.Fraction(1, sample_rate)
    return frame


class FullLevelAudio(MediaStreamTrack):
    """An audio track whose mono frames are passed on as `full_level_frame`s (any sample format,
    converted to s16); frames with more channels pass unchanged. Wraps a file's or a device's
    track (aiortc's `MediaPlayer`) so its sound is sent at its own level."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self._to_s16: av.AudioResampler | None = None
        self._format: tuple[str, int] | None = None

    async def recv(self) -> Any:
        frame = await self.source.recv()
        if not isinstance(frame, AudioFrame) or frame.layout.name != "mono":
            return frame
        if self._to_s16 is None or self._format != (frame.format.name, frame.sample_rate):
            self._to_s16 = av.AudioResampler(format="s16", layout="mono", rate=frame.sample_rate)
            self._format = (frame.format.name, frame.sample_rate)
        pts = frame.pts
        pieces = [p.to_ndarray().reshape(-1) for p in self._to_s16.resample(frame)]
        samples = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
        out = full_level_frame(samples, frame.sample_rate, 0 if pts is None else pts)
        out.time_base = frame.time_base
        return out

    def stop(self) -> None:
        super().stop()
        self.source.stop()
