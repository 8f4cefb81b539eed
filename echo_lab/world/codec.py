"""The world's sound as a WebRTC microphone track carries it: through Opus and back.

A live session hears its microphone after Opus at 48 kHz (aiortc's encoder on the sending
side, fed both channels at the sound's own level as Echo's microphone tracks do, and the
server's resampler to 16 kHz mono after decoding). `opus_roundtrip` applies the same
chain to 16-kHz samples, so training and the in-process benchmarks can hear what the service
hears. The codec delays the sound by about 13 ms; the result keeps the input's length.
"""

from __future__ import annotations

from dataclasses import replace

import av
import numpy as np
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame

from server.full_level import full_level_frame

from .render import Clip
from .spec import SAMPLE_RATE

OPUS_RATE = 48000
FRAME = 960  # 20 ms at 48 kHz


def _frames_to_samples(frames: list[av.AudioFrame]) -> np.ndarray:
    if not frames:
        return np.zeros(0, np.int16)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def opus_roundtrip(audio: np.ndarray) -> np.ndarray:
    """16-kHz mono float samples [n] through Opus at 48 kHz and back: float32 [n]."""
    up = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
    down = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    encoder, decoder = OpusEncoder(), OpusDecoder()
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    wide = _frames_to_samples([*up.resample(frame), *up.resample(None)])
    decoded: list[av.AudioFrame] = []
    for k in range(0, len(wide) - FRAME + 1, FRAME):
        for payload in encoder.encode(full_level_frame(wide[k : k + FRAME], OPUS_RATE, k))[0]:
            for out in decoder.decode(JitterFrame(data=payload, timestamp=k)):
                decoded += down.resample(out)  # type: ignore[arg-type]  # an AudioFrame
    decoded += down.resample(None)
    narrow = _frames_to_samples(decoded).astype(np.float32) / 32768.0
    return np.pad(narrow, (0, max(0, len(audio) - len(narrow))))[: len(audio)]


def coded_clip(clip: Clip) -> Clip:
    """`clip` with its sound through Opus and back (frames and spec unchanged)."""
    return replace(clip, audio=opus_roundtrip(clip.audio))
